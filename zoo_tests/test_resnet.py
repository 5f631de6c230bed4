"""zoo.ResNet: layouts, BatchNorm against NumPy, features, head reset, errors.

Agreement with torchvision itself (per stage, logits, a training step) is in
test_convert.py, which needs torch.
"""

import math

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
import pytest


def _vmap(f):
    return jax.vmap(f, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


def _num_params(model) -> int:
    """Floating-point arrays, of a model or of its `eqx.filter_eval_shape` skeleton."""
    leaves = jax.tree.leaves(model)
    return sum(
        x.size for x in leaves if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    )


def _tiny(key, **kwargs):
    import zoo

    config = {"layers": (1, 1), "widths": (4, 8), "stem": "small", "stem_width": 4}
    return eqx.nn.make_with_state(zoo.ResNet)(**{**config, "num_classes": 3, **kwargs}, key=key)


# torchvision's own counts (sum of `p.numel()` over `model.parameters()`): the same arrays.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMS))
def test_torchvision_layouts(arch):
    import zoo

    model, state = eqx.filter_eval_shape(zoo.create_model, arch)
    assert _num_params(model) == TORCHVISION_PARAMS[arch]
    x = jax.ShapeDtypeStruct((3, 224, 224), jnp.float32)
    maps, _ = eqx.filter_eval_shape(eqx.nn.inference_mode(model).forward_intermediates, x, state)
    e = 4 if arch == "resnet50" else 1
    assert [m.shape for m in maps] == [
        (64, 56, 56),
        (64 * e, 56, 56),
        (128 * e, 28, 28),
        (256 * e, 14, 14),
        (512 * e, 7, 7),
    ]
    logits, _ = eqx.filter_eval_shape(eqx.nn.inference_mode(model), x, state)
    assert logits.shape == (1000,) and model.num_features == 512 * e


@pytest.mark.parametrize("arch,blocks", [("resnet20", 3), ("resnet32", 5)])
def test_small_image_resnets(getkey, arch, blocks):
    import zoo

    model, state = zoo.create_model(arch, in_channels=1, key=getkey())
    assert [len(stage) for stage in model.stages] == [blocks] * 3
    assert model.stem_conv.kernel_size == (3, 3) and model.stem_conv.stride == (1, 1)
    x = jnp.ones((2, 1, 28, 28))
    maps, state = _vmap(model.forward_intermediates)(x, state)
    assert [m.shape for m in maps] == [
        (2, 16, 28, 28),
        (2, 16, 28, 28),
        (2, 32, 14, 14),
        (2, 64, 7, 7),
    ]
    logits, _ = _vmap(model)(x, state)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))


def _reference_stem(model, x, mean=None, var=None):
    """relu(BatchNorm(conv(x))) in NCHW: the conv by XLA in the other layout, the BatchNorm
    in NumPy (batch statistics unless `mean` and `var` are given)."""
    conv = model.stem_conv
    c = np.asarray(lax.conv_general_dilated(x, conv.weight, conv.stride, conv.padding), np.float64)
    if mean is None or var is None:
        mean, var = c.mean(axis=(0, 2, 3)), c.var(axis=(0, 2, 3))
    norm = model.stem_norm
    assert norm.weight is not None and norm.bias is not None
    shape = (1, -1, 1, 1)
    y = (c - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + norm.eps)
    y = y * np.reshape(norm.weight, shape) + np.reshape(norm.bias, shape)
    return np.maximum(y, 0), c


def test_batch_norm_training_and_inference_against_numpy(getkey):
    model, state = _tiny(getkey())
    x = jax.random.normal(getkey(), (4, 3, 6, 6))
    maps, new_state = _vmap(model.forward_intermediates)(x, state)
    want, c = _reference_stem(model, x)
    np.testing.assert_allclose(maps[0], want, rtol=1e-4, atol=1e-5)

    # Running statistics: Equinox's zero-debiased averages from (0, 1), the variance
    # unbiased as torch keeps it.
    norm, m = model.stem_norm, model.stem_norm.momentum
    assert norm.batch_state_index is not None and norm.batch_counter is not None
    n = c.shape[0] * c.shape[2] * c.shape[3]
    mean, var = c.mean(axis=(0, 2, 3)), c.var(axis=(0, 2, 3)) * n / (n - 1)
    hidden_mean, hidden_var = new_state.get(norm.batch_state_index)
    np.testing.assert_allclose(hidden_mean, (1 - m) * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(hidden_var, m + (1 - m) * var, rtol=1e-4, atol=1e-6)
    assert int(new_state.get(norm.batch_counter)) == 1

    # Inference divides by 1 - m**counter and uses them; training again does not.
    inference = eqx.nn.inference_mode(model)
    maps, same_state = _vmap(inference.forward_intermediates)(x, new_state)
    want, _ = _reference_stem(
        model, x, np.asarray(hidden_mean) / (1 - m), np.asarray(hidden_var) / (1 - m)
    )
    np.testing.assert_allclose(maps[0], want, rtol=1e-4, atol=1e-5)
    assert int(same_state.get(norm.batch_counter)) == 1


def test_features_head_and_reset(getkey):
    model, state = _tiny(getkey(), block="bottleneck")
    model = eqx.nn.inference_mode(model)
    x = jax.random.normal(getkey(), (3, 10, 10))
    maps, _ = model.forward_intermediates(x, state)
    features, _ = model.forward_features(x, state)
    assert features.shape == (32,) == (model.num_features,)
    np.testing.assert_allclose(features, maps[-1].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    logits, _ = model(x, state)
    np.testing.assert_allclose(logits, model.head(features), rtol=1e-6)

    fresh = model.reset_head(7, key=getkey())
    assert fresh.num_classes == 7 and fresh.head.weight.shape == (7, 32)
    assert model.num_classes == 3  # a new model; the old one is unchanged
    for a, b in zip(jax.tree.leaves(fresh.stages), jax.tree.leaves(model.stages), strict=True):
        assert a is b
    assert fresh(x, state)[0].shape == (7,)


def test_zero_init_residual_starts_blocks_at_identity(getkey):
    model, _ = _tiny(getkey(), zero_init_residual=True)
    for stage in model.stages:
        for block in stage:
            assert not np.any(block.bn2.weight)
            assert np.all(block.bn1.weight == 1)


def test_kaiming_initialisation(getkey):
    import zoo

    model, _ = zoo.create_model("resnet18", key=getkey())
    w = np.asarray(model.stages[3][1].conv2.weight)  # 512 x 512 x 3 x 3: 2.4M draws
    assert abs(w.std() / math.sqrt(2 / (512 * 9)) - 1) < 0.01 and abs(w.mean()) < 1e-4
    # Different convs draw different numbers.
    other = np.asarray(model.stages[3][1].conv1.weight)
    assert not np.allclose(w.ravel()[:100], other.ravel()[:100])


def test_training_step_compiles_once_and_has_gradients(getkey):
    model, state = _tiny(getkey())
    traces = []

    @eqx.filter_jit
    def step(model, state, x, y):
        traces.append(1)

        def loss(model):
            logits, new_state = _vmap(model)(x, state)
            return jnp.mean((logits - y) ** 2), new_state

        (value, new_state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
        return value, new_state, grads

    x, y = jax.random.normal(getkey(), (4, 3, 8, 8)), jnp.ones((4, 3))
    _, state, grads = step(model, state, x, y)
    _, state, grads = step(model, state, x + 1, y)
    assert len(traces) == 1
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(grads.stem_conv.weight).sum()) > 0


def test_bfloat16(getkey):
    model, state = _tiny(getkey(), dtype=jnp.bfloat16)
    x = jnp.ones((2, 3, 8, 8), jnp.bfloat16)
    logits, state = _vmap(model)(x, state)
    assert logits.dtype == jnp.bfloat16
    logits, _ = _vmap(eqx.nn.inference_mode(model))(x, state)
    assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"block": "wide"}, "`block` must be 'basic' or 'bottleneck'"),
        ({"stem": "cifar"}, "`stem` must be 'imagenet' or 'small'"),
        ({"layers": ()}, "`layers` must name at least one stage"),
        ({"widths": (4,)}, r"`widths` must have one entry per stage of `layers` \(2\), got 1"),
        ({"layers": (1, 0)}, "`layers` must be a positive integer, got 0"),
        ({"bn_momentum": 1.0}, r"`bn_momentum` must be in \(0, 1\)"),
        ({"num_classes": 0}, "`num_classes` must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(getkey, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(getkey(), **kwargs)


def test_bad_input_shape_is_named(getkey):
    model, state = _tiny(getkey())
    with pytest.raises(ValueError, match=r"ResNet: argument `x` must have shape \(3, \*, \*\)"):
        model(jnp.ones((1, 8, 8)), state)
    with pytest.raises(ValueError, match="positive integer"):
        model.reset_head(0, key=getkey())


def test_save_pretrained_reads_the_config_from_the_model(getkey, tmp_path, monkeypatch):
    import zoo

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    model, state = zoo.create_model("resnet20", in_channels=1, num_classes=4, key=getkey())
    model = model.reset_head(6, key=getkey())
    card = zoo.save_pretrained(tmp_path / "r", model, state, card=zoo.ModelCard("resnet20.t"))
    assert card.config == {"in_channels": 1, "num_classes": 6}
    loaded, loaded_state = zoo.load_pretrained(tmp_path / "r")
    assert loaded.num_classes == 6 and loaded.stem_norm.inference
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(model), strict=True):
        if eqx.is_array(a):  # (the `inference` flags differ: loading switches them on)
            np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(loaded_state), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
