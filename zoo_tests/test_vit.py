"""zoo.VisionTransformer: layouts, a NumPy reference forward pass, dropout and stochastic
depth, features, head reset, errors.

Agreement with timm itself (per block and logits) is in test_convert.py, which needs torch.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _num_params(model) -> int:
    """Floating-point arrays, of a model or of its `eqx.filter_eval_shape` skeleton."""
    leaves = jax.tree.leaves(model)
    return sum(
        x.size for x in leaves if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    )


def _tiny(key, **kwargs):
    import zoo

    config = {"image_size": 8, "patch_size": 4, "dim": 8, "depth": 2, "num_heads": 2}
    return zoo.VisionTransformer(**{**config, "num_classes": 3, **kwargs}, key=key)


# timm's own counts (sum of `p.numel()` over `model.parameters()`): the same arrays.
TIMM_PARAMS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
}


@pytest.mark.parametrize("arch", sorted(TIMM_PARAMS))
def test_timm_layouts(arch):
    import zoo

    model, state = eqx.filter_eval_shape(zoo.create_model, arch)
    assert jax.tree.leaves(state) == []
    assert _num_params(model) == TIMM_PARAMS[arch]
    x = jax.ShapeDtypeStruct((3, 224, 224), jnp.float32)
    tokens = eqx.filter_eval_shape(model.forward_intermediates, x)
    assert len(tokens) == 13 and all(t.shape == (197, model.num_features) for t in tokens)
    assert eqx.filter_eval_shape(model, x).shape == (1000,)


def test_small_image_preset(getkey):
    import zoo

    model, state = zoo.create_model("vit_patch4_28", key=getkey())
    assert model.pos_embed.shape == (50, 128) and len(model.blocks) == 6
    logits = jax.vmap(model)(jnp.ones((2, 1, 28, 28)))
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))


def _layer_norm(x, layer):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.eps) * np.asarray(layer.weight) + np.asarray(layer.bias)


def _linear(x, layer):
    return x @ np.asarray(layer.weight, np.float64).T + np.asarray(layer.bias)


def _reference(model, x):
    """The ViT in NumPy float64, from the paper's equations and the model's arrays."""
    c, h, w = x.shape
    p = model.patch_size
    conv = np.asarray(model.patch_embed.weight, np.float64)
    d = conv.shape[0]
    tokens = []
    for i in range(h // p):  # row-major patches, each a dot product with the conv kernel
        for j in range(w // p):
            patch = x[:, i * p : (i + 1) * p, j * p : (j + 1) * p]
            tokens.append(np.tensordot(conv, patch, axes=3))
    z = np.stack(tokens) + np.asarray(model.patch_embed.bias).reshape(1, d)
    z = np.concatenate([np.asarray(model.cls_token)[None], z]) + np.asarray(model.pos_embed)
    erf = np.vectorize(math.erf)
    heads = model.num_heads
    for block in model.blocks:
        a = _layer_norm(z, block.norm1)
        attn = block.attn
        q, k, v = (_linear(a, proj) for proj in (attn.query_proj, attn.key_proj, attn.value_proj))
        out = []
        for head in range(heads):
            s = slice(head * d // heads, (head + 1) * d // heads)
            logits = q[:, s] @ k[:, s].T / math.sqrt(d // heads)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            out.append(weights @ v[:, s])
        z = z + _linear(np.concatenate(out, axis=-1), attn.output_proj)
        m = _linear(_layer_norm(z, block.norm2), block.fc1)
        m = 0.5 * m * (1 + erf(m / math.sqrt(2)))  # exact GELU, as torch's default
        z = z + _linear(m, block.fc2)
    return _linear(_layer_norm(z, model.norm)[0], model.head)


def test_forward_against_numpy(getkey):
    model = _tiny(getkey(), image_size=(8, 12), in_channels=2)
    # Perturb the zero biases and unit norms so that every term shows.
    rng = np.random.default_rng(int(jax.random.randint(getkey(), (), 0, 2**30)))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    params = jax.tree.map(lambda x: x + 0.1 * rng.normal(size=x.shape).astype(x.dtype), params)
    model = eqx.combine(params, static)
    x = rng.normal(size=(2, 8, 12))
    want = _reference(model, x)
    got = eqx.filter_jit(model)(jnp.asarray(x, jnp.float32))  # one compile, not op by op
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_each_block_draws_its_own_weights(getkey):
    model = _tiny(getkey(), depth=3)
    weights = [np.asarray(b.attn.query_proj.weight) for b in model.blocks]
    assert not np.allclose(weights[0], weights[1]) and not np.allclose(weights[1], weights[2])
    assert abs(np.asarray(model.blocks[0].fc1.weight).std() - 0.02) < 0.01
    assert not np.any(model.blocks[0].fc1.bias)


def test_dropout_and_drop_path(getkey):
    model = _tiny(getkey(), dropout=0.2, attn_dropout=0.1, drop_path=0.3, depth=4)
    rates = [b.drop_path.rate for b in model.blocks]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3])  # linear, as timm's
    x = jax.random.normal(getkey(), (3, 8, 8))
    call = eqx.filter_jit(lambda model, x, key: model(x, key=key))
    k = getkey()
    a, b = call(model, x, k), call(model, x, k)
    np.testing.assert_array_equal(a, b)  # the key decides
    assert not np.allclose(a, call(model, x, getkey()))
    with pytest.raises(RuntimeError, match="requires a key"):  # eqx.nn.Dropout's
        model(x)
    inference = eqx.nn.inference_mode(model)
    assert all(blk.drop_path.inference for blk in inference.blocks)
    np.testing.assert_array_equal(call(inference, x, None), call(inference, x, getkey()))
    # With every rate at 0 a training call needs no key and equals inference.
    plain = _tiny(getkey())
    np.testing.assert_array_equal(plain(x), eqx.nn.inference_mode(plain)(x))


def test_features_and_reset_head(getkey):
    model = _tiny(getkey())
    x = jax.random.normal(getkey(), (3, 8, 8))
    tokens = model.forward_intermediates(x)
    assert len(tokens) == 3 and tokens[0].shape == (5, 8)
    features = model.forward_features(x)
    np.testing.assert_allclose(features, jax.vmap(model.norm)(tokens[-1])[0], rtol=1e-6)
    np.testing.assert_allclose(model(x), model.head(features), rtol=1e-6)
    fresh = model.reset_head(11, key=getkey())
    assert fresh(x).shape == (11,) and fresh.num_classes == 11 and model.num_classes == 3
    for a, b in zip(jax.tree.leaves(fresh.blocks), jax.tree.leaves(model.blocks), strict=True):
        assert a is b


def test_bfloat16_and_no_recompile(getkey):
    model = _tiny(getkey(), dtype=jnp.bfloat16)
    traces = []

    @eqx.filter_jit
    def f(model, x):
        traces.append(1)
        return jax.vmap(model)(x)

    y = f(model, jnp.ones((2, 3, 8, 8), jnp.bfloat16))
    y = f(model, jnp.zeros((2, 3, 8, 8), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and len(traces) == 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_size": 10}, r"`image_size` \(10, 10\) must be a multiple of `patch_size`=4"),
        ({"dim": 9}, "`dim`=9 must be a multiple of `num_heads`=2"),
        ({"depth": 0}, "`depth` must be a positive integer"),
        ({"mlp_ratio": 0.0}, "`mlp_ratio` must be positive"),
        ({"drop_path": 1.0}, r"`drop_path` must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"`dropout` must be in \[0, 1\)"),
    ],
)
def test_bad_arguments_are_named(getkey, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(getkey(), **kwargs)


def test_bad_input_shape_is_named(getkey):
    model = _tiny(getkey())
    with pytest.raises(ValueError, match=r"argument `x` must have shape \(3, 8, 8\)"):
        model(jnp.ones((3, 8, 12)))


def test_save_pretrained_reads_the_config_from_the_model(getkey, tmp_path, monkeypatch):
    import zoo

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    model, state = zoo.create_model("vit_patch4_28", depth=2, dim=16, drop_path=0.1, key=getkey())
    card = zoo.save_pretrained(tmp_path / "v", model, state, card=zoo.ModelCard("vit_patch4_28.t"))
    assert card.config == {"depth": 2, "dim": 16, "drop_path": 0.1}
    loaded, _ = zoo.load_pretrained(tmp_path / "v")
    assert loaded.blocks[1].drop_path.rate == 0.1 and loaded.blocks[1].drop_path.inference
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(model), strict=True):
        if eqx.is_array(a):
            np.testing.assert_array_equal(a, b)
