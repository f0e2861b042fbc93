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


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | piecewise
    warmup_steps: int = 0  # linear warmup from 0, optimizer steps
    end_factor: float = 0.0  # cosine: final rate as a fraction of the peak
    boundaries_epochs: list[int] = field(default_factory=list)  # piecewise: epochs where the rate is multiplied
    decay_factor: float = 0.1  # piecewise: the multiplier


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd | rmsprop
    learning_rate: float = 1e-3  # peak step size
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9  # sgd / rmsprop
    nesterov: bool = False
    weight_decay: float = 0.0  # adamw, decoupled, per step relative to the rate
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
class Config:
    seed: int = 0
    compilation_cache_dir: Optional[str] = None  # persistent XLA cache (None: off)
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
    cs.store(group="task", name="vae_schema", node=VAETaskConfig)
