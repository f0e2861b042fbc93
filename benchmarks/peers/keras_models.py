"""The reference models in Keras 3 on its JAX backend: one training step each, as `scripts.benchmark` times it.

Keras runs as its users run it: `Model.compile(jit_compile=True)` and
`train_on_batch` (which returns the loss to the host each step), in a process
of its own with Keras's and JAX's defaults. The DCGAN has no `fit` form (two
players): its step is the stateless JAX loop that Keras documents for custom
training, jitted as one program. airbench94 has no Keras peer (no Keras
airbench94 exists to mirror; its frozen whitening layer, scaled BN-bias
learning rates and lookahead would be a port of our own).

Shapes: B batch, H W C image, T time, D width.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from benchmarks.peers.common import NotAvailable, images


def optimizer_for(optimizer):
    import keras

    name, lr, clip = optimizer["name"], optimizer["learning_rate"], optimizer.get("grad_clip_norm")
    kw = {"global_clipnorm": clip} if clip else {}
    if name == "adam":
        return keras.optimizers.Adam(lr, beta_1=optimizer.get("b1", 0.9), beta_2=optimizer.get("b2", 0.999), **kw)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=optimizer.get("weight_decay", 0.0),
                                      beta_1=optimizer.get("b1", 0.9), beta_2=optimizer.get("b2", 0.999), **kw)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=optimizer.get("momentum") or 0.0, nesterov=bool(optimizer.get("nesterov")), **kw)
    raise NotAvailable(f"no Keras optimizer for {name}")


def fit_runner(model, settings, x, y, loss) -> Callable[[int], None]:
    """`run(k)`: k `train_on_batch` calls of the compiled `model` on one batch held by JAX."""
    import jax.numpy as jnp

    model.compile(optimizer=optimizer_for(settings["optimizer"]), loss=loss, jit_compile=True)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def run(k: int) -> None:
        for _ in range(k):
            model.train_on_batch(x, y)

    return run


def mlp(s, batch):
    """jaxdl's MLP classifier as a `keras.Sequential`."""
    import keras

    m = s["model"]
    layers = [keras.Input(batch["image"].shape[1:]), keras.layers.Flatten()]
    for h in m["hidden_dims"]:
        layers += [keras.layers.Dense(h, activation="relu"), keras.layers.Dropout(m["dropout_rate"])]
    model = keras.Sequential([*layers, keras.layers.Dense(m["num_outputs"])])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit_runner(model, s, images(batch), np.asarray(batch["label"]).astype(np.int32), loss)


def cnn(s, batch):
    """jaxdl's CNN (Keras example or VGG-style) as a `keras.Sequential`, NHWC."""
    import keras

    m = s["model"]
    layers = [keras.Input(batch["image"].shape[1:])]
    for width in m["channels"]:
        for _ in range(m["convs_per_block"]):
            layers.append(keras.layers.Conv2D(width, m["kernel_size"], padding=m["padding"].lower(), use_bias=not m["batch_norm"]))
            if m["batch_norm"]:
                layers.append(keras.layers.BatchNormalization())
            layers.append(keras.layers.ReLU())
        layers.append(keras.layers.MaxPooling2D(m["pool_size"]))
        if m.get("conv_dropout_rate"):
            layers.append(keras.layers.Dropout(m["conv_dropout_rate"]))
    layers.append(keras.layers.Flatten())
    for width in m["dense_dims"]:
        layers += [keras.layers.Dense(width, activation="relu"), keras.layers.Dropout(m.get("dropout_rate") or 0.0)]
    model = keras.Sequential([*layers, keras.layers.Dense(m["num_outputs"])])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit_runner(model, s, images(batch), np.asarray(batch["label"]).astype(np.int32), loss)


def lstm(s, batch):
    """jaxdl's LSTM language model as a `keras.Sequential` (unmasked: every position counts)."""
    import keras

    m = s["model"]
    layers = [keras.Input(batch["tokens"].shape[1:], dtype="int32"), keras.layers.Embedding(m["vocab_size"], m["embed_dim"])]
    layers += [keras.layers.LSTM(m["hidden_dim"], return_sequences=True) for _ in range(m["num_layers"])]
    model = keras.Sequential([*layers, keras.layers.Dense(m["vocab_size"])])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit_runner(model, s, np.asarray(batch["tokens"]).astype(np.int32), np.asarray(batch["targets"]).astype(np.int32), loss)


def vae(s, batch):
    """The MLP VAE as a functional model whose output is each example's negative ELBO (the loss is its mean)."""
    import keras
    from keras import ops

    m = s["model"]
    if m.get("architecture", "mlp") != "mlp":
        raise NotAvailable("only the MLP VAE has a Keras peer")
    x = images(batch).reshape(len(batch["image"]), -1)

    class NegativeELBO(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.seed = keras.random.SeedGenerator(0)
            self.enc = [keras.layers.Dense(h, activation="tanh") for h in m["hidden_dims"]]
            self.mu, self.logvar = keras.layers.Dense(m["latent_dim"]), keras.layers.Dense(m["latent_dim"])
            self.dec = [keras.layers.Dense(h, activation="tanh") for h in reversed(m["hidden_dims"])]
            self.out = keras.layers.Dense(x.shape[1])

        def call(self, pixels):
            target = ops.cast(keras.random.uniform(ops.shape(pixels), seed=self.seed) < pixels, "float32")
            h = target
            for layer in self.enc:
                h = layer(h)
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + ops.exp(0.5 * logvar) * keras.random.normal(ops.shape(mu), seed=self.seed)
            for layer in self.dec:
                z = layer(z)
            logits = self.out(z)
            recon = ops.sum(ops.softplus(logits) - target * logits, axis=1)
            kl = 0.5 * ops.sum(ops.square(mu) + ops.exp(logvar) - 1.0 - logvar, axis=1)
            return recon + kl

    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, NegativeELBO()(inputs))
    return fit_runner(model, s, x, np.zeros(len(x), np.float32), lambda y_true, y_pred: ops.mean(y_pred))


def transformer(s, batch):
    """nanoGPT's GPT in Keras layers (pre-LayerNorm, no biases, tied embeddings, `ops.dot_product_attention`)."""
    import keras
    from keras import ops

    m = s["model"]
    d, heads, bias = m["embed_dim"], m["num_heads"], m["use_bias"]
    tokens = np.asarray(batch["tokens"]).astype(np.int32)

    class Block(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.ln_1 = keras.layers.LayerNormalization(epsilon=1e-5, center=bias)
            self.ln_2 = keras.layers.LayerNormalization(epsilon=1e-5, center=bias)
            self.qkv, self.out = keras.layers.Dense(3 * d, use_bias=bias), keras.layers.Dense(d, use_bias=bias)
            self.fc = keras.layers.Dense(m["mlp_ratio"] * d, use_bias=bias)
            self.proj = keras.layers.Dense(d, use_bias=bias)

        def call(self, x):
            b, t = ops.shape(x)[0], ops.shape(x)[1]
            q, k, v = ops.split(self.qkv(self.ln_1(x)), 3, axis=-1)
            q, k, v = (ops.reshape(z, (b, t, heads, d // heads)) for z in (q, k, v))
            y = ops.reshape(ops.dot_product_attention(q, k, v, is_causal=True), (b, t, d))
            x = x + self.out(y)
            return x + self.proj(ops.gelu(self.fc(self.ln_2(x)), approximate=False))

    class GPT(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.wte = keras.layers.Embedding(m["vocab_size"], d)
            self.wpe = keras.layers.Embedding(m["max_len"], d)
            self.blocks = [Block() for _ in range(m["num_layers"])]
            self.ln_f = keras.layers.LayerNormalization(epsilon=1e-5, center=bias)

        def call(self, ids):
            x = self.wte(ids) + self.wpe(ops.arange(ops.shape(ids)[1]))
            for block in self.blocks:
                x = block(x)
            return ops.matmul(self.ln_f(x), ops.transpose(self.wte.embeddings))

    inputs = keras.Input(tokens.shape[1:], dtype="int32")
    model = keras.Model(inputs, GPT()(inputs))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit_runner(model, s, tokens, np.asarray(batch["targets"]).astype(np.int32), loss)


def gan(s, batch):
    """jaxdl's DCGAN in Keras layers (Conv2DTranspose generator, batch norm, LeakyReLU 0.2) and one
    non-saturating step, D then G, each with its own Adam, written as Keras documents a custom JAX step:
    `stateless_call` inside `jax.value_and_grad`, `optimizer.stateless_apply`, one `jax.jit` program."""
    import jax
    import keras
    from keras import layers

    m, t = s["model"], s["task"]
    if t.get("loss", "non_saturating") != "non_saturating" or t.get("n_critic", 1) != 1:
        raise NotAvailable("only the non-saturating loss with n_critic=1 has a Keras peer")
    if m.get("discriminator_norm", "batch") != "batch":
        raise NotAvailable("only discriminator_norm=batch has a Keras peer")
    height, width, channels = m["image_shape"]
    c0, c1 = m["channels"]
    slope, momentum = m.get("leaky_slope", 0.2), m.get("batch_norm_momentum", 0.9)
    g = keras.Sequential([
        keras.Input((m["latent_dim"],)),
        layers.Dense(height // 4 * width // 4 * c0, use_bias=False), layers.Reshape((height // 4, width // 4, c0)),
        layers.BatchNormalization(momentum=momentum), layers.ReLU(),
        layers.Conv2DTranspose(c1, 4, 2, padding="same", use_bias=False), layers.BatchNormalization(momentum=momentum),
        layers.ReLU(),
        layers.Conv2DTranspose(channels, 4, 2, padding="same", activation="tanh"),
    ])
    d = keras.Sequential([
        keras.Input((height, width, channels)),
        layers.Conv2D(c1, 4, 2, padding="same"), layers.LeakyReLU(slope),
        layers.Conv2D(c0, 4, 2, padding="same", use_bias=False), layers.BatchNormalization(momentum=momentum),
        layers.LeakyReLU(slope), layers.Flatten(), layers.Dense(1),
    ])
    opt = s["optimizer"]
    g_opt = keras.optimizers.Adam(opt["learning_rate"], beta_1=opt.get("b1", 0.5), beta_2=opt.get("b2", 0.999))
    d_opt = keras.optimizers.Adam(opt["learning_rate"] * t.get("d_learning_rate_multiplier", 1.0),
                                  beta_1=opt.get("b1", 0.5), beta_2=opt.get("b2", 0.999))
    g_opt.build(g.trainable_variables)
    d_opt.build(d.trainable_variables)
    real = jax.numpy.asarray(np.asarray(batch["image"], np.float32) / 127.5 - 1.0)
    latent = m["latent_dim"]

    def d_loss(d_tv, d_ntv, fake):
        real_logits, d_ntv = d.stateless_call(d_tv, d_ntv, real, training=True)
        fake_logits, d_ntv = d.stateless_call(d_tv, d_ntv, fake, training=True)
        return jax.numpy.mean(jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)), d_ntv

    def g_loss(g_tv, g_ntv, d_tv, d_ntv, z):
        fake, g_ntv = g.stateless_call(g_tv, g_ntv, z, training=True)
        logits, _ = d.stateless_call(d_tv, d_ntv, fake, training=True)
        return jax.numpy.mean(jax.nn.softplus(-logits)), g_ntv

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, key):
        g_tv, g_ntv, g_ov, d_tv, d_ntv, d_ov = state
        k_d, k_g = jax.random.split(key)
        fake, _ = g.stateless_call(g_tv, g_ntv, jax.random.normal(k_d, (len(real), latent)), training=True)
        (_, d_ntv), grads = jax.value_and_grad(d_loss, has_aux=True)(d_tv, d_ntv, jax.lax.stop_gradient(fake))
        d_tv, d_ov = d_opt.stateless_apply(d_ov, grads, d_tv)
        z = jax.random.normal(k_g, (len(real), latent))
        (_, g_ntv), grads = jax.value_and_grad(g_loss, has_aux=True)(g_tv, g_ntv, d_tv, d_ntv, z)
        g_tv, g_ov = g_opt.stateless_apply(g_ov, grads, g_tv)
        return g_tv, g_ntv, g_ov, d_tv, d_ntv, d_ov

    values = lambda variables: [v.value for v in variables]
    state = [(values(g.trainable_variables), values(g.non_trainable_variables), values(g_opt.variables),
              values(d.trainable_variables), values(d.non_trainable_variables), values(d_opt.variables))]
    keys = iter(jax.random.split(jax.random.key(0), 1_000_000))

    def run(k: int) -> None:
        for _ in range(k):
            state[0] = step(state[0], next(keys))
        jax.block_until_ready(state[0])

    return run


#: arch -> builder(settings, batch) -> run(k).
BUILDERS = {"mlp": mlp, "cnn": cnn, "lstm": lstm, "vae": vae, "transformer": transformer, "gan": gan}

