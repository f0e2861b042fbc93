"""Typed schemas of `conf/`, registered in Hydra's ConfigStore.

Every YAML option extends one of these dataclasses, so a misspelled key, a
value of the wrong type (`optimizer.learning_rate=abc`) or an unknown option
(`model=nope`) fails when Hydra composes the config, with Hydra's message,
before any JAX work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    name: str = MISSING  # registered dataset, see jaxdl.data.sources.BUILDERS
    batch_size: int = 100  # global training batch, examples over all devices
    eval_batch_size: Optional[int] = None  # global eval batch (None: batch_size)
    data_dir: Optional[str] = None  # prepared TFDS datasets (None: $JAXDL_DATA_DIR or TFDS default)
    manual_dir: Optional[str] = None  # raw files for offline preparation (None: download)
    train_split: str = "train"
    eval_split: str = "test"
    train_limit: Optional[int] = None  # first N training examples only (quick runs)
    eval_limit: Optional[int] = None  # first N eval examples only
    streaming: bool = False  # read training batches from the array_record files on demand (same batches as in memory)
    num_workers: int = 0  # streaming: grain reader processes (0: one background thread)
    prefetch_batches: int = 2  # streaming: batches each reader keeps ready


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | piecewise | triangular
    warmup_steps: int = 0  # linear warmup from 0, optimizer steps
    warmup_offset: int = 0  # warmup rate at step s: peak * (s + offset) / (warmup_steps + offset); nanoGPT: 1
    end_factor: float = 0.0  # cosine: final rate as a fraction of the peak
    boundaries_epochs: list[int] = field(default_factory=list)  # piecewise: epochs where the rate is multiplied
    decay_factor: float = 0.1  # piecewise: the multiplier
    start_factor: float = 0.0  # triangular: initial rate as a fraction of the peak (reached at warmup_steps)


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd | rmsprop
    learning_rate: float = 1e-3  # peak step size
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9  # sgd / rmsprop
    nesterov: bool = False
    weight_decay: float = 0.0  # adamw: decoupled, per step relative to the rate; sgd: added to the gradient (PyTorch's)
    decay_min_ndim: int = 0  # adamw: decay only parameters with at least this many axes (2: not biases/norms)
    grad_clip_norm: Optional[float] = None  # clip the global gradient norm to this
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class CheckpointConfig:
    keep_last: int = 2  # recent checkpoints kept besides the best one


@dataclass
class TrainerConfig:
    epochs: int = 10
    max_steps: Optional[int] = None  # run length in optimizer steps, replacing epochs (None: epochs)
    num_devices: Optional[int] = None  # local devices to use (None: all)
    backend: str = "shard_map"  # shard_map | pmap
    log_every_steps: int = 100  # steps between metric fetches from the devices
    eval_every_epochs: int = 1
    eval_every_steps: Optional[int] = None  # evaluate every N steps instead of by epochs
    checkpoint_every_steps: Optional[int] = None  # extra mid-epoch checkpoints
    monitor: Optional[str] = None  # metric for best checkpoint and early stopping (None: the task's)
    mode: Optional[str] = None  # min | max (None: the task's)
    patience: Optional[int] = None  # evaluations without improvement before stopping (None: never stop)
    min_delta: float = 0.0
    nan_guard: bool = True
    progress: bool = True
    artifacts: bool = True
    prefetch_to_device: int = 0  # batches put on the devices ahead of the step (0: off)
    diagnostics_every_steps: int = 0  # per-layer gradient norms and dead units every N steps (0: off)
    tensorboard: bool = True
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class VAEModelConfig:
    name: str = "vae"
    latent_dim: int = 50  # Z
    hidden_dims: list[int] = field(default_factory=lambda: [200, 200])  # MLP encoder widths
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv encoder widths
    architecture: str = "mlp"  # mlp | conv
    activation: str = "tanh"
    image_shape: list[int] = field(default_factory=lambda: [28, 28, 1])  # H, W, C
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"


@dataclass
class VAETaskConfig:
    name: str = "vae"
    binarize_train: bool = True  # dynamic binarization of training pixels
    eval_binarize_seed: Optional[int] = 0  # one-off binarization of the eval split
    iw_samples: int = 1000  # K of the importance-weighted test NLL (0: skip)
    iw_chunk: int = 50  # importance samples decoded at once
    num_sample_images: int = 64
    active_unit_threshold: float = 0.01


@dataclass
class TextDataConfig(DataConfig):
    vocab_size: int = 65  # V, characters in `vocabulary`
    vocabulary: str = MISSING  # token table: the character of each id, in order
    seq_len: int = 256  # T, characters per window (the model's context)
    train_stride: int = 1  # characters between training window starts (1: every offset)


@dataclass
class TraceDataConfig(DataConfig):
    vocab_size: int = 341  # V: BOS (0) and system-call numbers 1..340
    seq_len: int = 100  # T, calls per window
    eval_context: int = 0  # calls opening each later eval window that are read but not scored
    holdout_fraction: float = 0.2  # share of the eval split's normal traces held out (early stopping, threshold)
    holdout_seed: int = 0  # draws the held-out traces
    family_names: list[str] = field(default_factory=list)  # attack family id -> name
    supervised_attack_fraction: float = 0.0  # supervised classifier: share of attack traces moved into training
    supervised_seed: int = 0  # draws those attack traces


@dataclass
class TransformerModelConfig:
    name: str = "transformer"
    vocab_size: int = 65  # V
    max_len: int = 256  # context length, tokens (learned positions, cache size)
    num_layers: int = 6
    num_heads: int = 6
    embed_dim: int = 384  # D; head width D / num_heads
    mlp_ratio: int = 4  # MLP width / D
    dropout_rate: float = 0.2  # embeddings, attention probabilities, residual branches
    use_bias: bool = False  # biases in Dense and LayerNorm
    dtype: str = "float32"  # compute dtype (bfloat16 on GPU/TPU)
    param_dtype: str = "float32"


@dataclass
class RNNModelConfig:
    name: str = "rnn"
    vocab_size: int = 341  # V
    cell: str = "lstm"  # rnn (Elman) | gru | lstm
    num_layers: int = 1
    hidden_dim: int = 200  # units per layer
    embed_dim: int = 64  # token embedding width
    dropout_rate: float = 0.0  # on the embedding and between layers
    num_classes: Optional[int] = None  # many-to-one classifier with this many classes (None: language model)
    dtype: str = "float32"
    param_dtype: str = "float32"


@dataclass
class LanguageModelTaskConfig:
    name: str = "language_model"
    vocabulary: Optional[str] = None  # text: the token table, to write samples (None: no samples)
    sample_prompt: str = "\n"  # text that starts each sample
    sample_tokens: int = 300  # characters generated per evaluation (0: none)
    sample_temperature: float = 0.8  # 0: greedy
    sample_top_k: Optional[int] = 200  # sample among the k most likely (None: all)
    sample_seed: int = 0
    score: str = "mean"  # traces: mean (NLL per call) | max_window (worst window's NLL per call)
    false_alarm_rate: float = 0.05  # traces: target false alarms of the threshold set on held-out normals
    family_names: Optional[list[str]] = None  # traces: attack family id -> name


@dataclass
class TraceClassificationTaskConfig(LanguageModelTaskConfig):
    name: str = "trace_classification"


@dataclass
class DistributedConfig:
    enabled: bool = False  # call jax.distributed.initialize before anything else
    coordinator_address: Optional[str] = None  # "host:port" of process 0 (None: detected, e.g. under SLURM)
    num_processes: Optional[int] = None  # None: detected
    process_id: Optional[int] = None  # None: detected


@dataclass
class ExpectedConfig:
    metric: str = MISSING  # e.g. eval/nll
    value: float = MISSING  # the published (or targeted) number, in the metric's unit
    comparison: str = "within"  # within (|measured - value| <= tolerance) | at_most | at_least
    tolerance: float = 0.0
    source: str = ""  # where the number comes from


@dataclass
class MLPModelConfig:
    name: str = "mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [512, 512])  # hidden layer widths
    num_outputs: int = 10  # classes (classification) or targets (regression)
    activation: str = "relu"
    dropout_rate: float = 0.0  # after every hidden activation, per-example masks
    batch_norm: bool = False  # batch-normalise hidden pre-activations (statistics of the global batch)
    batch_norm_momentum: float = 0.9  # running-average decay of the batch statistics
    dtype: str = "float32"
    param_dtype: str = "float32"


@dataclass
class CNNModelConfig:
    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [16, 32])  # output channels of each block
    convs_per_block: int = 1
    kernel_size: int = 2  # pixels
    padding: str = "VALID"  # VALID | SAME
    conv_lowering: str = "xla"  # xla | im2col (convolutions as matrix products over patches)
    pool: str = "max"  # max | avg | none
    pool_size: int = 2  # pixels, window and stride
    pool_first: bool = False  # pool after each block's first convolution (airbench's order)
    batch_norm: bool = False
    batch_norm_momentum: float = 0.9
    conv_dropout_rate: float = 0.0  # after each block
    dropout_rate: float = 0.0  # after each hidden dense layer
    dense_dims: list[int] = field(default_factory=lambda: [100])
    num_outputs: int = 10
    activation: str = "relu"
    dtype: str = "float32"
    param_dtype: str = "float32"


@dataclass
class AugmentConfig:
    crop_pad: int = 0  # pixels of padding before a random crop (0: no crop)
    crop_mode: str = "reflect"  # reflect | constant (zeros)
    flip: bool = False  # random horizontal flips
    cutout_size: int = 0  # side of a zeroed square, pixels (0: none)


@dataclass
class ClassificationTaskConfig:
    name: str = "classification"
    num_classes: int = 10  # K
    input_key: str = "image"  # batch key of the input (image | features)
    label_key: str = "label"
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training-time augmentation on device (default: none)
    normalize_mean: Optional[list[float]] = None  # per-channel mean in [0, 1] pixel units
    normalize_std: Optional[list[float]] = None  # per-channel standard deviation in [0, 1] pixel units
    class_names: Optional[list[str]] = None  # labels of the confusion-matrix picture
    label_smoothing: float = 0.0  # training targets (1 - a) one_hot + a / K
    tta_level: int = 0  # final-evaluation test-time augmentation: 0 none, 1 mirror, 2 mirror + 1-pixel shifts


@dataclass
class Airbench94ModelConfig:
    name: str = "airbench94"
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # output channels of the three ConvGroups
    whiten_kernel_size: int = 2  # pixels
    batch_norm_momentum: float = 0.6  # running-average decay (PyTorch momentum 0.4)
    batch_norm_eps: float = 1e-12
    scaling_factor: float = 0.1111111111111111  # multiplies the logits (1/9)
    num_outputs: int = 10
    dtype: str = "float32"
    param_dtype: str = "float32"


@dataclass
class AirbenchTaskConfig(ClassificationTaskConfig):
    name: str = "airbench"
    batch_size: int = MISSING  # global training batch; the loss is summed over it (${data.batch_size})
    total_steps: Optional[int] = None  # run length in optimizer steps (${trainer.max_steps}); None: epochs
    epochs: Optional[int] = None  # used when total_steps is None (${trainer.epochs})
    weight_decay: float = 1.3623652173913043  # PyTorch SGD weight_decay of kernels: 0.0153 * 1024 / 11.5
    bias_scaler: float = 64.0  # BatchNorm biases: step x this, weight decay / this
    whiten_bias_epochs: int = 3  # epochs the whitening bias trains before it is frozen
    whiten_images: int = 5000  # first N training images whose patch covariance gives the whitening filters
    whiten_eps: float = 5e-4  # added to the covariance eigenvalues
    flip: bool = True  # alternating flips (random once per run, all mirrored every odd epoch)
    translate: int = 2  # random shifts up to this many pixels (reflect padding)
    lookahead: bool = True  # lookahead average of weights every 5 steps
    label_smoothing: float = 0.2
    tta_level: int = 2


@dataclass
class RegressionTaskConfig:
    name: str = "regression"
    input_key: str = "features"
    target_key: str = "target"
    standardize: bool = True  # features and targets, statistics of the training split only
    linear_baseline: bool = True  # ordinary least squares on the same split in the final evaluation


@dataclass
class AutoencoderModelConfig:
    name: str = "autoencoder"
    code_dim: int = 2  # Z
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])  # MLP encoder widths, mirrored
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv encoder widths, mirrored
    architecture: str = "mlp"  # mlp | conv
    activation: str = "relu"
    image_shape: list[int] = field(default_factory=lambda: [28, 28, 1])  # H, W, C
    dtype: str = "float32"
    param_dtype: str = "float32"


@dataclass
class AutoencoderTaskConfig:
    name: str = "autoencoder"
    loss: str = "bce"  # bce (nats per image) | mse (sum over pixels)
    noise: str = "none"  # none | gaussian | masking (denoising autoencoder)
    noise_level: float = 0.0  # Gaussian std (intensities in [0, 1]) or masking probability
    eval_noise_seed: int = 0  # fixes the test-set corruption
    knn_neighbors: int = 5  # k of the k-NN in code space and PCA space (0: skip)
    knn_train_examples: Optional[int] = None  # training examples for k-NN and PCA (None: all)
    anomaly_class: Optional[int] = None  # class left out of training and scored as anomalous (None: off)
    num_images: int = 16  # test images per reconstruction picture


@dataclass
class RBMModelConfig:
    name: str = "rbm"
    num_hidden: int = 500  # H
    init_scale: float = 0.01  # std of the initial weights
    param_dtype: str = "float32"


@dataclass
class RBMTaskConfig:
    name: str = "rbm"
    cd_steps: int = 1  # k, Gibbs sweeps of the negative phase
    persistent: bool = False  # persistent CD (Tieleman 2008) instead of CD-k
    num_chains: int = 100  # persistent chains (divisible by the device count)
    weight_cost: float = 2e-4  # L2 on W added to its gradient
    binarize_train: bool = True  # fresh Bernoulli pixels at every use
    eval_binarize_seed: int = 0  # one fixed binarization of the test set
    free_energy_train_examples: int = 1000  # training images compared with the test set (free-energy gap)
    ais_runs: int = 100  # M, AIS runs for log Z (Salakhutdinov & Murray 2008: 100)
    ais_betas: int = 14500  # K, intermediate distributions (paper: 14,500; 0 skips AIS)
    ais_seed: int = 0
    feature_classifier: bool = True  # logistic regression on hidden probabilities (and on pixels)
    feature_classifier_train_examples: Optional[int] = None  # None: the whole training split
    num_sample_chains: int = 64  # chains in samples/epoch_NNN.png
    sample_gibbs_steps: int = 1000  # Gibbs sweeps before a sample is shown
    num_filters: int = 100  # hidden units in filters/epoch_NNN.png


@dataclass
class GANModelConfig:
    name: str = "gan"
    latent_dim: int = 100  # Z, noise width (Radford et al. 2016: 100)
    image_shape: list[int] = field(default_factory=lambda: [28, 28, 1])  # H, W, C (H and W divisible by 4)
    channels: list[int] = field(default_factory=lambda: [64, 32])  # generator widths at H/4 and H/2, mirrored in D
    discriminator_norm: str = "batch"  # batch (DCGAN) | layer | none (wgan_gp needs layer or none)
    leaky_slope: float = 0.2  # discriminator LeakyReLU negative slope
    batch_norm_momentum: float = 0.9  # running-average decay of the batch statistics
    dtype: str = "float32"
    param_dtype: str = "float32"


@dataclass
class GANTaskConfig:
    name: str = "gan"
    loss: str = "non_saturating"  # non_saturating | minimax | least_squares | hinge | wgan_gp
    n_critic: int = 1  # discriminator updates per generator update (WGAN-GP: 5)
    gp_weight: float = 10.0  # lambda of the WGAN-GP gradient penalty
    d_learning_rate_multiplier: float = 1.0  # D's step size / G's (TTUR when != 1)
    ema_decay: float = 0.0  # > 0: samples and FID from a moving average of G (0: the current G)
    num_sample_images: int = 64  # images per samples/epoch_NNN.png, from the same noise every epoch
    sample_seed: int = 0  # that noise, and the noise of the final FID samples
    fid_classifier: Optional[str] = None  # run dir of a classifier on the same data: final eval/fid (None: off)
    fid_samples: int = 10000  # generated images for that FID


@dataclass
class Config:
    seed: int = 0
    compilation_cache_dir: Optional[str] = None  # persistent XLA cache (None: off)
    env: dict[str, str] = field(default_factory=dict)  # environment variables set before JAX starts
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    expected: Optional[ExpectedConfig] = None  # what scripts.reproduce checks a finished run against
    model: Any = MISSING
    task: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def register() -> None:
    """Stores the schemas: `config_schema` and `<group>/<name>_schema` nodes."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="optimizer", name="optimizer_schema", node=OptimizerConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="model", name="vae_schema", node=VAEModelConfig)
    cs.store(group="model", name="cnn_schema", node=CNNModelConfig)
    cs.store(group="task", name="vae_schema", node=VAETaskConfig)
    cs.store(group="model", name="mlp_schema", node=MLPModelConfig)
    cs.store(group="model", name="autoencoder_schema", node=AutoencoderModelConfig)
    cs.store(group="model", name="rbm_schema", node=RBMModelConfig)
    cs.store(group="task", name="classification_schema", node=ClassificationTaskConfig)
    cs.store(group="model", name="airbench94_schema", node=Airbench94ModelConfig)
    cs.store(group="task", name="airbench_schema", node=AirbenchTaskConfig)
    cs.store(group="task", name="regression_schema", node=RegressionTaskConfig)
    cs.store(group="task", name="autoencoder_schema", node=AutoencoderTaskConfig)
    cs.store(group="task", name="rbm_schema", node=RBMTaskConfig)
    cs.store(group="data", name="text_data_schema", node=TextDataConfig)
    cs.store(group="data", name="trace_data_schema", node=TraceDataConfig)
    cs.store(group="model", name="transformer_schema", node=TransformerModelConfig)
    cs.store(group="model", name="rnn_schema", node=RNNModelConfig)
    cs.store(group="task", name="language_model_schema", node=LanguageModelTaskConfig)
    cs.store(group="task", name="trace_classification_schema", node=TraceClassificationTaskConfig)
    cs.store(group="model", name="gan_schema", node=GANModelConfig)
    cs.store(group="task", name="gan_schema", node=GANTaskConfig)
