"""CNN: the classic Keras network's size and a VGG-style variant in training mode."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.cnn import CNN


def test_default_is_the_keras_cnn_with_its_parameter_count():
    x = jnp.zeros((2, 32, 32, 3))
    variables = CNN().init(jax.random.key(0), x, train=False)
    # conv 2x2x3x16+16, conv 2x2x16x32+32, dense (7*7*32)x100+100, dense 100x10+10
    assert sum(p.size for p in jax.tree.leaves(variables)) == 208 + 2080 + 156_900 + 1_010
    logits = CNN().apply(variables, x, train=False)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_vgg_style_variant_trains_with_batch_norm_and_dropout():
    model = CNN(channels=(8, 16), convs_per_block=2, kernel_size=3, padding="SAME", batch_norm=True,
                conv_dropout_rate=0.2, dropout_rate=0.5, dense_dims=(32,))
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    keys = jax.random.split(jax.random.key(2), 4)
    logits, updates = model.apply(variables, x, train=True, example_keys=keys, mutable=["batch_stats"])
    assert logits.shape == (4, 10)
    assert not np.allclose(updates["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    again = model.apply(variables, x, train=True, example_keys=keys, mutable=["batch_stats"])[0]
    np.testing.assert_array_equal(logits, again)  # dropout is a function of the keys
    np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))


def test_too_many_pooling_blocks_name_the_fix():
    with pytest.raises(ValueError, match="fewer blocks"):
        CNN(channels=(4,) * 6).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def test_pool_first_pools_after_the_first_convolution_of_each_block():
    x = jnp.zeros((2, 32, 32, 3))
    model = CNN(channels=(8, 16), convs_per_block=2, kernel_size=3, padding="SAME", pool_first=True, dense_dims=())
    variables = model.init(jax.random.key(0), x, train=False)
    assert model.apply(variables, x, train=False).shape == (2, 10)
    flops = jax.jit(lambda v: model.apply(v, x, train=False)).lower(variables).compile().cost_analysis()
    later = CNN(channels=(8, 16), convs_per_block=2, kernel_size=3, padding="SAME", dense_dims=())
    flops_later = jax.jit(lambda v: later.apply(v, x, train=False)).lower(variables).compile().cost_analysis()
    assert flops["flops"] < 0.6 * flops_later["flops"]  # the second convolutions see a quarter of the pixels


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("size", [8, 31, 15])  # 31 and 15: the Keras CNN's odd feature maps (the remainder is dropped)
def test_reshaped_pooling_equals_flax_pooling_in_values_and_gradients(pool, size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    model = CNN(channels=(3,), kernel_size=1, padding="SAME", dense_dims=(), pool=pool)
    flax_pool = nn.max_pool if pool == "max" else nn.avg_pool
    pooled = model.bind({})._pool(x)
    assert pooled.shape == (2, size // 2, size // 2, 3)
    np.testing.assert_allclose(pooled, flax_pool(x, (2, 2), strides=(2, 2)), rtol=1e-6)
    cotangent = jax.random.normal(jax.random.key(1), pooled.shape)
    grad = jax.grad(lambda v: jnp.vdot(model.bind({})._pool(v), cotangent))(x)
    flax_grad = jax.grad(lambda v: jnp.vdot(flax_pool(v, (2, 2), strides=(2, 2)), cotangent))(x)
    np.testing.assert_allclose(grad, flax_grad, rtol=1e-6)  # no ties in continuous random inputs


@pytest.mark.parametrize("sizes", [{}, dict(channels=(8, 16), convs_per_block=2, kernel_size=3, padding="SAME",
                                            batch_norm=True, dense_dims=(32,))])
def test_im2col_lowering_gives_the_same_logits_and_gradients_without_a_convolution(sizes):
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
    xla, im2col = CNN(**sizes), CNN(**sizes, conv_lowering="im2col")
    variables = xla.init(jax.random.key(1), x, train=False)

    def loss(module, v):
        return jnp.sum(jnp.sin(module.apply(v, x, train=False)))

    # the logits, not the loss: a sum of sines cancels, which turns float32 summation order into relative error
    logits = [jax.jit(lambda v, m=m: m.apply(v, x, train=False))(variables) for m in (xla, im2col)]
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-6)
    grads = [jax.jit(jax.grad(lambda v, m=m: loss(m, v)))(variables) for m in (xla, im2col)]  # one program each
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(lambda v: loss(im2col, v))(variables))
    assert "conv_general_dilated" not in jaxpr and "conv_general_dilated" in str(
        jax.make_jaxpr(lambda v: loss(xla, v))(variables))
    with pytest.raises(ValueError, match="conv_lowering"):
        CNN(conv_lowering="fft").init(jax.random.key(1), x, train=False)
