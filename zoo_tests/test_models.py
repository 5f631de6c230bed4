import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest


def _bn_vmap(model):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


# ---------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_mlp_shapes_and_dtypes(getkey, dtype):
    import zoo

    model = zoo.MLP(dtype=dtype, key=getkey())
    assert [layer.weight.shape for layer in model.layers] == [(512, 784), (512, 512), (10, 512)]
    y = jax.vmap(model)(jnp.ones((3, 784), dtype))
    assert y.shape == (3, 10) and y.dtype == dtype
    small = zoo.MLP(in_size=5, num_classes=2, width=7, depth=3, activation="tanh", key=getkey())
    assert len(small.layers) == 4 and small(jnp.ones(5)).shape == (2,)
    assert zoo.MLP(in_size=3, num_classes=1, depth=0, key=getkey())(jnp.ones(3)).shape == (1,)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_convnet_shapes_and_dtypes(getkey, dtype):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(dtype=dtype, key=getkey())
    assert [c.out_channels for c in model.convs] == [32, 32, 10, 10]
    assert [c.kernel_size for c in model.convs] == [(5, 5), (5, 5), (3, 3), (3, 3)]
    assert [c.stride for c in model.convs] == [(2, 2)] * 4
    assert [n is not None for n in model.norms] == [True, True, True, False]
    assert model.head.in_features == 10 * 2 * 2  # 28 -> 14 -> 7 -> 4 -> 2 with SAME padding
    logits, state = _bn_vmap(model)(jnp.ones((4, 1, 28, 28), dtype), state)
    assert logits.shape == (4, 10) and logits.dtype == dtype
    logits, _ = eqx.nn.inference_mode(model)(jnp.ones((1, 28, 28), dtype), state)
    assert logits.shape == (10,)


def test_convnet_configurable(getkey):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(8, 16),
        kernel_sizes=3,
        strides=1,
        batch_norm=True,
        pools=2,
        hidden=(32,),
        in_channels=3,
        in_size=(16, 12),
        num_classes=5,
        dropout=0.25,
        key=getkey(),
    )
    assert model.head.in_features == 32 and model.dense[0].in_features == 16 * 4 * 3
    x = jr.normal(getkey(), (2, 3, 16, 12))
    keys = jr.split(getkey(), 2)
    logits, state = jax.vmap(
        lambda x, s, k: model(x, s, key=k),
        axis_name="batch",
        in_axes=(0, None, 0),
        out_axes=(0, None),
    )(x, state, keys)
    assert logits.shape == (2, 5)


def test_gru_shapes(getkey):
    import zoo

    model = zoo.GRU(key=getkey())
    assert model.encoder.embed is not None
    assert model.encoder.embed.weight.shape == (12, 1)
    assert model.encoder.cell.weight_hh.shape == (36, 12)
    assert model.readout.weight.shape == (1, 12)
    assert model.encoder.initial_state is not None
    y = jax.vmap(model)(jnp.ones((5, 9, 1)))
    assert y.shape == (5, 9, 1) and y.dtype == jnp.float32
    clf = zoo.GRUClassifier(key=getkey())
    assert clf(jnp.ones((28, 28))).shape == (10,)
    assert zoo.GRU(learn_initial_state=False, key=getkey()).encoder.initial_state is None


def test_regression_shapes(getkey):
    import zoo

    lin = zoo.LinearRegression(3, key=getkey())
    assert lin(jnp.ones(3)).shape == ()
    assert jax.vmap(lin)(jnp.ones((4, 3))).shape == (4,)
    log = zoo.LogisticRegression(3)
    assert float(log.probability(jnp.ones(3))) == pytest.approx(0.5)  # zero init


# ---------------------------------------------------------------- values against references


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_gru_step(cell, x, h):
    w = np.asarray(cell.weight_ih, np.float64)
    u = np.asarray(cell.weight_hh, np.float64)
    b = np.asarray(cell.bias, np.float64)
    n = cell.hidden_size
    wz, wr, wh = w[:n], w[n : 2 * n], w[2 * n :]
    uz, ur, uh = u[:n], u[n : 2 * n], u[2 * n :]
    bz, br, bh = b[:n], b[n : 2 * n], b[2 * n :]
    z = _np_sigmoid(wz @ x + uz @ h + bz)
    r = _np_sigmoid(wr @ x + ur @ h + br)
    c = np.tanh(wh @ x + uh @ (r * h) + bh)
    return z * h + (1 - z) * c


def test_gru_cell_matches_numpy_equations(getkey):
    import zoo

    cell = zoo.GRUCell(4, 6, key=getkey())
    x = np.asarray(jr.normal(getkey(), (4,)))
    h = np.asarray(jr.normal(getkey(), (6,)))
    expected = _np_gru_step(cell, x.astype(np.float64), h.astype(np.float64))
    np.testing.assert_allclose(cell(jnp.asarray(x), jnp.asarray(h)), expected, rtol=1e-5, atol=1e-6)


def test_scanned_gru_matches_python_loop(getkey):
    import zoo

    model = zoo.GRU(in_size=2, hidden_size=5, out_size=3, key=getkey())
    model = eqx.tree_at(lambda m: m.encoder.initial_state, model, jr.normal(getkey(), (5,)))
    xs = jr.normal(getkey(), (7, 2))
    enc = model.encoder
    h = enc.initial_state
    outs = []
    for x in xs:
        h = enc.cell(jax.nn.relu(enc.embed(x)), h)
        outs.append(model.readout(h))
    np.testing.assert_allclose(model(xs), jnp.stack(outs), rtol=1e-5, atol=1e-6)


def test_batchnorm_statistics_and_running_state_match_numpy(getkey):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(4,), kernel_sizes=3, strides=1, batch_norm=True, in_size=6, key=getkey()
    )
    # Non-trivial affine parameters so that they are tested too.
    norm = model.norms[0]
    assert norm is not None
    model = eqx.tree_at(
        lambda m: (m.norms[0].weight, m.norms[0].bias),
        model,
        (jr.normal(getkey(), (4,)), jr.normal(getkey(), (4,))),
    )
    norm = model.norms[0]
    assert norm is not None
    x = jr.normal(getkey(), (8, 1, 6, 6))
    logits, new_state = _bn_vmap(model)(x, state)

    pre = np.asarray(jax.vmap(model.convs[0])(x), np.float64)  # (batch, C, H, W)
    mean = pre.mean(axis=(0, 2, 3))
    var = pre.var(axis=(0, 2, 3))
    w, b = np.asarray(norm.weight), np.asarray(norm.bias)
    normed = (pre - mean[:, None, None]) / np.sqrt(var[:, None, None] + norm.eps)
    act = np.maximum(normed * w[:, None, None] + b[:, None, None], 0.0)
    expected = act.reshape(8, -1) @ np.asarray(model.head.weight).T + np.asarray(model.head.bias)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)

    m = norm.momentum
    hidden_mean, hidden_var = new_state.get(norm.batch_state_index)
    assert int(new_state.get(norm.batch_counter)) == 1
    np.testing.assert_allclose(hidden_mean, (1 - m) * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(hidden_var, m * 1.0 + (1 - m) * var, rtol=1e-4, atol=1e-6)

    # Inference mode: the debiased running statistics, not the batch's; state unchanged.
    infer = eqx.nn.inference_mode(model)
    run_mean = np.asarray(hidden_mean) / (1 - m)
    run_var = np.asarray(hidden_var) / (1 - m)
    one = x[0]
    y, after = infer(one, new_state)
    pre0 = pre[0]
    normed0 = (pre0 - run_mean[:, None, None]) / np.sqrt(run_var[:, None, None] + norm.eps)
    act0 = np.maximum(normed0 * w[:, None, None] + b[:, None, None], 0.0)
    expected0 = act0.reshape(-1) @ np.asarray(model.head.weight).T + np.asarray(model.head.bias)
    np.testing.assert_allclose(y, expected0, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(after.get(norm.batch_state_index)[0], hidden_mean)
    # And a batch in inference mode gives each example the same answer as alone.
    ys, _ = jax.vmap(infer, in_axes=(0, None), out_axes=(0, None))(x, new_state)
    np.testing.assert_allclose(ys[0], y, rtol=1e-5, atol=1e-6)


def test_batchnorm_gradients_match_the_textbook_formula(getkey):
    """The training-mode BatchNorm is written for speed (the variance is not differentiated
    through the mean, the scale is folded per channel); its gradients must still be those
    of the plain two-pass formula, differentiated whole. In float64, so that any difference
    beyond rounding shows."""
    import zoo

    with jax.enable_x64(True):
        model, state = eqx.nn.make_with_state(zoo.ConvNet)(
            channels=(3, 4),
            kernel_sizes=3,
            strides=(1, 2),
            batch_norm=True,
            in_size=7,
            dtype=jnp.float64,
            key=getkey(),
        )
        model = eqx.tree_at(
            lambda m: [m.norms[i].weight for i in (0, 1)] + [m.norms[i].bias for i in (0, 1)],
            model,
            [jr.normal(getkey(), (c,), jnp.float64) for c in (3, 4, 3, 4)],
        )
        x = jr.normal(getkey(), (5, 1, 7, 7), jnp.float64) + 3.0  # a mean far from 0
        target = jr.normal(getkey(), (5, 10), jnp.float64)

        def ours(m):
            logits, _ = _bn_vmap(m)(x, state)
            return jnp.sum((logits - target) ** 2)

        def textbook(m):
            h = x
            for conv, norm in zip(m.convs, m.norms, strict=True):
                h = jax.vmap(conv)(h)  # (batch, C, H, W)
                mean = jnp.mean(h, axis=(0, 2, 3), keepdims=True)
                var = jnp.mean((h - mean) ** 2, axis=(0, 2, 3), keepdims=True)
                h = (h - mean) / jnp.sqrt(var + norm.eps)
                w, b = norm.weight[None, :, None, None], norm.bias[None, :, None, None]
                h = jax.nn.relu(h * w + b)
            logits = h.reshape(len(x), -1) @ m.head.weight.T + m.head.bias[None]
            return jnp.sum((logits - target) ** 2)

        got = eqx.filter_jit(eqx.filter_grad(ours))(model)
        want = eqx.filter_jit(eqx.filter_grad(textbook))(model)
        pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
        assert len(pairs) == 10  # 2 convs (weight, bias), 2 norms (weight, bias), the head
        for g, w in pairs:
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)
        norm_grad = got.norms[0].weight
        assert norm_grad is not None and float(jnp.abs(norm_grad).sum()) > 1e-3


def test_batchnorm_takes_the_conv_bias_as_a_shift_that_only_the_running_mean_sees(
    getkey, monkeypatch
):
    """In training mode the conv bias before a BatchNorm never meets the map (the batch
    mean absorbs it): outputs and every other gradient equal those of adding it first, to
    float rounding; its own gradient is exactly zero (zero in exact arithmetic too); the
    running mean still records it, so inference mode adds it back."""
    import zoo
    import zoo.models._convnet as convnet

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(3, 4), kernel_sizes=3, strides=(1, 2), batch_norm=True, in_size=7, key=getkey()
    )
    biases = [0.1 * jr.normal(getkey(), (c.out_channels, 1, 1)) + 3.0 for c in model.convs]
    model = eqx.tree_at(lambda m: [c.bias for c in m.convs], model, biases)
    x = jr.normal(getkey(), (5, 1, 7, 7))

    def loss(m):
        logits, new_state = _bn_vmap(m)(x, state)
        return jnp.sum(logits**2), new_state

    def run():
        return eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))(model)

    conv_last, batch_norm_last = convnet._conv_last, convnet._batch_norm_last

    def use_reference():
        """The bias added to the map first, BatchNorm with no shift."""
        monkeypatch.setattr(convnet, "_conv_last", lambda conv, h, bias=True: conv_last(conv, h))
        monkeypatch.setattr(
            convnet,
            "_batch_norm_last",
            lambda norm, h, st, shift=None: batch_norm_last(norm, h, st),
        )

    (value, new_state), grads = run()
    use_reference()
    (ref_value, ref_state), ref_grads = run()
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for conv, ref_conv in zip(grads.convs, ref_grads.convs, strict=True):
        assert not np.any(np.asarray(conv.bias))  # exactly zero
        assert np.abs(np.asarray(ref_conv.bias)).max() < 1e-3  # rounding noise, not signal
        np.testing.assert_allclose(conv.weight, ref_conv.weight, rtol=1e-4, atol=1e-5)
    for path in ("norms", "head"):
        for g, r in zip(
            jax.tree.leaves(getattr(grads, path)), jax.tree.leaves(getattr(ref_grads, path))
        ):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    for norm in model.norms:
        assert norm is not None
        mean, var = new_state.get(norm.batch_state_index)
        ref_mean, ref_var = ref_state.get(norm.batch_state_index)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, ref_var, rtol=1e-5, atol=1e-6)
        # The shift of about 3 is recorded: the running mean after one step is (1 - m) of it.
        assert float(jnp.min(mean / (1 - norm.momentum))) > 1.0
    infer = eqx.nn.inference_mode(model)
    monkeypatch.undo()
    ours, _ = jax.vmap(infer, in_axes=(0, None), out_axes=(0, None))(x, new_state)
    use_reference()
    ref, _ = jax.vmap(infer, in_axes=(0, None), out_axes=(0, None))(x, new_state)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_mlp_gradients_match_finite_differences(getkey):
    import zoo

    with jax.enable_x64(True):
        model = zoo.MLP(
            in_size=4,
            num_classes=3,
            width=5,
            depth=2,
            activation="tanh",
            dtype=jnp.float64,
            key=getkey(),
        )
        x = jr.normal(getkey(), (4,), jnp.float64)

        def loss(m):
            return jnp.sum(m(x) ** 2)

        grads = eqx.filter_grad(loss)(model)
        w = model.layers[1].weight
        g = grads.layers[1].weight
        eps = 1e-6
        for idx in [(0, 0), (2, 3), (4, 1)]:
            bump = jnp.zeros_like(w).at[idx].set(eps)
            plus = eqx.tree_at(lambda m: m.layers[1].weight, model, w + bump)
            minus = eqx.tree_at(lambda m: m.layers[1].weight, model, w - bump)
            fd = (loss(plus) - loss(minus)) / (2 * eps)
            np.testing.assert_allclose(g[idx], fd, rtol=1e-6, atol=1e-9)


def test_least_squares_matches_numpy(getkey):
    import zoo

    x = jr.normal(getkey(), (50, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 3.0 + 0.01 * jr.normal(getkey(), (50,))
    coef, intercept = zoo.least_squares(x, y)
    design = np.concatenate([np.asarray(x), np.ones((50, 1))], axis=1)
    ref = np.linalg.lstsq(design, np.asarray(y), rcond=None)[0]
    np.testing.assert_allclose(coef, ref[:3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(intercept, ref[3], rtol=1e-4, atol=1e-4)
    model = zoo.LinearRegression.from_least_squares(x, y)
    np.testing.assert_allclose(jax.vmap(model)(x), design @ ref, rtol=1e-4, atol=1e-4)
    from jaxtyping import TypeCheckError

    # The tests run with shape checking on, so jaxtyping catches it before our own check.
    with pytest.raises(TypeCheckError, match=r"(?s)parameter 'y'.*f32\[49\].*samples=50"):
        zoo.least_squares(x, y[:49])


def test_logistic_regression_probability(getkey):
    import zoo

    model = zoo.LogisticRegression(2, key=getkey())
    x = jnp.array([0.3, -1.2])
    logit = float(jnp.dot(model.weight, x) + model.bias)
    assert float(model.probability(x)) == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-5)


# ---------------------------------------------------------------- compilation


def test_jitted_call_does_not_recompile(getkey):
    import zoo

    model = zoo.MLP(in_size=8, num_classes=2, width=4, key=getkey())
    traces = []

    @eqx.filter_jit
    def forward(m, x):
        traces.append(1)
        return jax.vmap(m)(x)

    forward(model, jnp.ones((3, 8)))
    forward(model, jnp.zeros((3, 8)))
    other = eqx.tree_at(lambda m: m.layers[0].weight, model, model.layers[0].weight + 1)
    forward(other, jnp.ones((3, 8)))
    assert len(traces) == 1


# ---------------------------------------------------------------- bad input


def test_wrong_axis_size_names_argument_and_shapes(getkey):
    import zoo

    model = zoo.MLP(key=getkey())
    with pytest.raises(
        ValueError, match=r"MLP: argument `x` must have shape \(784,\), got \(783,\)"
    ):
        model(jnp.ones(783))
    conv, state = eqx.nn.make_with_state(zoo.ConvNet)(key=getkey())
    with pytest.raises(
        ValueError, match=r"argument `x` must have shape \(1, 28, 28\), got \(3, 28, 28\)"
    ):
        conv(jnp.ones((3, 28, 28)), state)
    with pytest.raises(
        ValueError, match=r"argument `xs` must have shape \(time, 1\), got \(10, 2\)"
    ):
        zoo.GRU(key=getkey())(jnp.ones((10, 2)))


def test_wrong_rank_and_dtype_are_type_errors_naming_argument(getkey):
    from jaxtyping import TypeCheckError

    import zoo

    model = zoo.MLP(key=getkey())
    with pytest.raises(TypeCheckError, match=r"(?s)parameter 'x'.*f32\[2,784\]"):
        model(jnp.ones((2, 784)))
    with pytest.raises(TypeCheckError, match=r"(?s)parameter 'x'.*i32\[784\]"):
        model(jnp.ones(784, jnp.int32))
    with pytest.raises(TypeCheckError, match=r"(?s)parameter 'xs'.*f32\[10\]"):
        zoo.GRU(key=getkey())(jnp.ones(10))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda k: __import__("zoo").MLP(width=0, key=k), "`width` must be a positive integer"),
        (lambda k: __import__("zoo").MLP(in_size=-3, key=k), "`in_size` must be a positive"),
        (lambda k: __import__("zoo").MLP(activation="relu6x", key=k), "unknown `activation`"),
        (lambda k: __import__("zoo").ConvNet(channels=(8, 0), key=k), "`channels`"),
        (
            lambda k: __import__("zoo").ConvNet(kernel_sizes=(3, 3), key=k),
            r"`kernel_sizes` must have one entry per layer \(4\), got 2",
        ),
        (
            lambda k: __import__("zoo").ConvNet(
                channels=(4,), kernel_sizes=7, batch_norm=True, in_size=5, padding="VALID", key=k
            ),
            r"`kernel_sizes\[0\]`=7 is larger than the 5x5 feature map",
        ),
        (lambda k: __import__("zoo").ConvNet(padding="FULL", key=k), "`padding`"),
        (lambda k: __import__("zoo").ConvNet(activation="nope", key=k), "unknown `activation`"),
        (lambda k: __import__("zoo").GRU(hidden_size=0, key=k), "`hidden_size`"),
        (lambda k: __import__("zoo").GRUCell(0, 3, key=k), "`in_size`"),
        (lambda k: __import__("zoo").LinearRegression(0), "`in_size`"),
    ],
)
def test_impossible_constructor_arguments_raise_value_error(getkey, build, message):
    with pytest.raises(ValueError, match=message):
        build(getkey())


def test_zoo_typecheck_switch_in_a_fresh_process():
    """`ZOO_TYPECHECK=1` alone (no pytest plugin) turns on runtime shape checking."""
    code = textwrap.dedent(
        """
        import jax.numpy as jnp, jax.random as jr
        import zoo
        from jaxtyping import TypeCheckError
        model = zoo.MLP(in_size=4, num_classes=2, width=3, key=jr.PRNGKey(0))
        try:
            model(jnp.ones(4, jnp.int32))
        except TypeCheckError as e:
            print("CHECKED", "parameter 'x'" in str(e))
        else:
            print("UNCHECKED")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "ZOO_TYPECHECK"}
    on = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "ZOO_TYPECHECK": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    off = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert on.stdout.strip() == "CHECKED True"
    assert off.stdout.strip() == "UNCHECKED"


# ---------------------------------------------------------------- summary


def test_summary_lists_every_parameter_with_totals(getkey):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(key=getkey())
    text = zoo.summary(model, state)
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_array))[0]
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path, simple=True, separator=".")
        assert name in text
        assert str(leaf.shape) in text
    total = sum(leaf.size for _, leaf in leaves)
    assert total == 30_822
    assert "Total: 30,822 parameters" in text
    assert "State: " in text
    mlp_text = zoo.summary(zoo.MLP(key=getkey()))
    assert "Total: 669,706 parameters" in mlp_text  # 784*512+512 + 512*512+512 + 512*10+10


def test_convnet_with_pooling_and_dropout_is_differentiable(getkey):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(4, 4),
        kernel_sizes=3,
        strides=1,
        batch_norm=True,
        pools=2,
        hidden=(8,),
        in_size=8,
        dropout=0.5,
        key=getkey(),
    )
    x = jr.normal(getkey(), (3, 1, 8, 8))
    keys = jr.split(getkey(), 3)

    def loss(m):
        out, _ = jax.vmap(
            lambda xi, ki: m(xi, state, key=ki),
            axis_name="batch",
            in_axes=(0, 0),
            out_axes=(0, None),
        )(x, keys)
        return jnp.sum(out**2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    g = grads.convs[0].weight
    assert g.shape == model.convs[0].weight.shape
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    # Max-pooling by hand: the pooled map of the first block, against NumPy.
    inner = np.asarray(jax.nn.relu(model.convs[0](x[0])))
    pooled = inner.reshape(4, 4, 2, 4, 2).max(axis=(2, 4))
    np.testing.assert_allclose(eqx.nn.MaxPool2d(2, stride=2)(jnp.asarray(inner)), pooled)


def _reduce_window_pool(h, pool):
    window = (1, *pool, 1)
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, window, "VALID")


@pytest.mark.parametrize(
    "shape, pool",
    [
        ((1, 8, 8, 3), (2, 2)),
        ((1, 9, 7, 2), (2, 3)),  # remainders dropped, as VALID pooling does
        ((1, 10, 4), (3,)),
        ((1, 4, 6, 5, 2), (2, 2, 2)),
    ],
)
def test_max_pool_equals_reduce_window_bit_for_bit(shape, pool):
    """The ConvNet's reshape max-pool against `lax.reduce_window`: the same values and the
    same gradients, bit for bit, on maps with many ties (a flat background, as images
    give), where the gradient must go to the first maximum of each window only."""
    from zoo.models._convnet import _max_pool_last

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., : shape[-1] // 2 + 1] = 0.25  # flat channels: every window is one tie
    x.reshape(-1)[::7] = 1.5  # repeated maxima inside the other windows
    x = jnp.asarray(x)
    ours = _max_pool_last(x, pool)
    ref = _reduce_window_pool(x, pool)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)
    weights = jnp.asarray(rng.standard_normal(ref.shape).astype(np.float32))
    grads = [
        jax.grad(lambda x, f=f: jnp.sum(f(x, pool) * weights))(x)
        for f in (_max_pool_last, _reduce_window_pool)
    ]
    np.testing.assert_array_equal(grads[0], grads[1])
    assert int(jnp.sum(grads[0] != 0)) == int(np.prod(ref.shape))  # one position per window
    # A NaN in a window is its maximum, as with reduce_window.
    bad = x.at[(0,) * (x.ndim - 1) + (shape[-1] - 1,)].set(jnp.nan)
    assert bool(jnp.isnan(_max_pool_last(bad, pool)).any())
    np.testing.assert_array_equal(
        jnp.isnan(_max_pool_last(bad, pool)), jnp.isnan(_reduce_window_pool(bad, pool))
    )


def test_pooled_convnet_trains_bit_identically_to_reduce_window(getkey, monkeypatch):
    """The strong preset's network on images with black backgrounds (ties in every flat
    region): loss and gradients equal to those with `lax.reduce_window` pooling."""
    import zoo
    import zoo.models._convnet as convnet

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        **{**convnet.STRONG_CNN, "dropout": 0.0}, key=getkey()
    )
    images = np.zeros((6, 1, 28, 28), np.float32)
    images[:, :, 8:20, 10:18] = np.random.default_rng(1).random((6, 1, 12, 8))

    def loss(m):
        out, _ = _bn_vmap(m)(jnp.asarray(images), state)
        return jnp.sum(out**2)

    runs = []
    for pool in (convnet._max_pool_last, _reduce_window_pool):
        monkeypatch.setattr(convnet, "_max_pool_last", pool)
        value, grads = eqx.filter_jit(eqx.filter_value_and_grad(loss))(model)
        runs.append((value, jax.tree.leaves(grads)))
    assert float(runs[0][0]) == float(runs[1][0])
    for ours, ref in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_array_equal(ours, ref)


# ---------------------------------------------------------------- N-d ConvNets


def _eqx_conv_stack(model, d, padding, getkey):
    """The same network as a ConvNet without BatchNorm, built from eqx.nn.Conv1d/2d/3d
    (channels first, Equinox's own __call__), with the ConvNet's weights copied in."""
    cls = {1: eqx.nn.Conv1d, 2: eqx.nn.Conv2d, 3: eqx.nn.Conv3d}[d]
    convs = []
    for conv in model.convs:
        ref = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=padding,
            key=getkey(),
        )
        convs.append(eqx.tree_at(lambda c: (c.weight, c.bias), ref, (conv.weight, conv.bias)))

    def forward(x):
        for conv in convs:
            x = jax.nn.relu(conv(x))
        return model.head(x.reshape(-1))

    return forward


@pytest.mark.parametrize(
    "d, in_size, kernels, strides, padding",
    [
        (1, (40,), 5, 2, 2),
        (1, (17,), (3, 4), 1, "VALID"),
        (2, (9, 11), ((3, 5), 3), ((1, 2), 2), (1, 2)),
        (2, (8, 8), 3, 1, "SAME"),
        (3, (6, 7, 5), 3, (1, (2, 1, 1)), "VALID"),
        (3, (5, 5, 4), (3, 1), 1, "SAME"),
    ],
)
def test_convnet_matches_an_eqx_conv_stack(getkey, d, in_size, kernels, strides, padding):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(3, 4),
        kernel_sizes=kernels,
        strides=strides,
        padding=padding,
        batch_norm=False,
        in_channels=2,
        in_size=in_size,
        num_classes=5,
        key=getkey(),
    )
    assert model.num_spatial_dims == d and not model.stateful
    assert jax.tree.leaves(state) == []
    reference = _eqx_conv_stack(model, d, padding, getkey)
    x = jr.normal(getkey(), (3, 2, *in_size))
    want = jax.vmap(reference)(x)
    np.testing.assert_allclose(jax.vmap(model)(x), want, rtol=1e-5, atol=1e-5)
    # With its (empty) state it is called as a stateful model, to the same logits.
    logits, same = jax.vmap(model, in_axes=(0, None), out_axes=(0, None))(x, state)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    assert jax.tree.leaves(same) == []


def test_mnist_1d_cnn_builds_directly_with_7710_parameters(getkey):
    """The 1-D CNN of the MNIST-1D paper: 3 x Conv1d(25, kernel 5, stride 2) + ReLU, linear
    head, on 40-sample signals; the same parameters as the eqx.nn.Conv1d model."""
    import zoo

    model = zoo.ConvNet(
        channels=(25, 25, 25),
        kernel_sizes=5,
        strides=2,
        batch_norm=False,
        in_size=(40,),
        key=getkey(),
    )

    def count(tree):
        return sum(x.size for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array)))

    keys = jr.split(getkey(), 4)
    eqx_model = [
        eqx.nn.Conv1d(1, 25, 5, stride=2, padding=2, key=keys[0]),
        eqx.nn.Conv1d(25, 25, 5, stride=2, padding=2, key=keys[1]),
        eqx.nn.Conv1d(25, 25, 5, stride=2, padding=2, key=keys[2]),
        eqx.nn.Linear(125, 10, key=keys[3]),
    ]
    assert count(model) == count(eqx_model) == 7710
    signals = jr.normal(getkey(), (6, 1, 40))
    logits = jax.vmap(model)(signals)
    assert logits.shape == (6, 10) and bool(jnp.all(jnp.isfinite(logits)))
    with pytest.raises(ValueError, match=r"must have shape \(1, 40\), got \(40,\)"):
        model(signals[0, 0])


def test_convnet_1d_with_batch_norm_is_stateful(getkey):
    import zoo

    model, state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(4, 4),
        kernel_sizes=3,
        strides=1,
        batch_norm=(True, False),
        in_size=(12,),
        key=getkey(),
    )
    assert model.stateful and len(jax.tree.leaves(state)) > 0
    x = jr.normal(getkey(), (5, 1, 12))
    logits, new_state = _bn_vmap(model)(x, state)
    assert logits.shape == (5, 10)
    norm = model.norms[0]
    assert norm is not None
    assert norm.batch_counter is not None and norm.batch_state_index is not None
    assert int(new_state.get(norm.batch_counter)) == 1
    # Against NumPy: the conv's outputs, normalised per channel over (batch, length).
    pre = np.asarray(jax.vmap(model.convs[0])(x), np.float64)
    mean = pre.mean(axis=(0, 2))
    np.testing.assert_allclose(
        new_state.get(norm.batch_state_index)[0], (1 - norm.momentum) * mean, rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="needs its `state`"):
        model(x[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_size=(8, 8), num_spatial_dims=3), r"`in_size` must have one entry per spatial"),
        (dict(num_spatial_dims=4), "`num_spatial_dims` must be 1, 2 or 3"),
        (dict(in_size=(40,), kernel_sizes=((3, 3),) * 4), r"`kernel_sizes\[0\]` must have one"),
        (dict(in_size=(40,), padding=(1, 1)), r"`padding` must have one entry per spatial"),
        (dict(in_size=(40,), padding=-1), "`padding` must hold non-negative"),
        (dict(in_size=(6,), kernel_sizes=9, padding="VALID"), r"`kernel_sizes\[0\]`=9"),
    ],
)
def test_convnet_geometry_errors_name_the_argument(getkey, kwargs, message):
    import zoo

    with pytest.raises(ValueError, match=message):
        zoo.ConvNet(batch_norm=False, key=getkey(), **kwargs)


# ---------------------------------------------------------------- logistic regression


def _np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_multinomial_logistic_regression_matches_numpy_softmax(getkey):
    import zoo

    model = zoo.LogisticRegression(in_size=6, num_classes=4, key=getkey())
    model = eqx.tree_at(lambda m: m.bias, model, jr.normal(getkey(), (4,)))
    assert model.weight.shape == (4, 6) and model.bias.shape == (4,)
    x = jr.normal(getkey(), (9, 6))
    w, b = np.asarray(model.weight, np.float64), np.asarray(model.bias, np.float64)
    logits = np.asarray(x, np.float64) @ w.T + b
    np.testing.assert_allclose(jax.vmap(model)(x), logits, rtol=1e-5, atol=1e-6)
    probs = jax.vmap(model.probability)(x)
    np.testing.assert_allclose(probs, _np_softmax(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-6)
    # Zero initialisation without a key: every class equally likely.
    flat = zoo.LogisticRegression(6, num_classes=4)
    np.testing.assert_allclose(flat.probability(jnp.ones(6)), np.full(4, 0.25), rtol=1e-6)
    with pytest.raises(ValueError, match="`num_classes` must be at least 2"):
        zoo.LogisticRegression(6, num_classes=1)
    with pytest.raises(ValueError, match=r"argument `x` must have shape \(6,\)"):
        model(jnp.ones(5))


# ---------------------------------------------------------------- GRU against torch.nn.GRU


def _zoo_cell_from_torch(weight_ih, weight_hh, bias_ih, bias_hh, getkey):
    """A `reset_after=True` GRUCell holding torch's weights: torch orders the gates (r, z, n),
    zoo (z, r, h); the z and r biases add up, and the n gate's recurrent bias stays apart."""
    import zoo

    def zrn(a):
        r, z, n = np.split(np.asarray(a, np.float32), 3)
        return np.concatenate([z, r, n])

    hidden = weight_hh.shape[1]
    b_ih, b_hh = zrn(bias_ih), zrn(bias_hh)
    bias = np.concatenate([b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden :]])
    cell = zoo.GRUCell(weight_ih.shape[1], hidden, reset_after=True, key=getkey())
    return eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_hh),
        cell,
        tuple(jnp.asarray(a) for a in (zrn(weight_ih), zrn(weight_hh), bias, b_hh[2 * hidden :])),
    )


def test_reset_after_gru_matches_torch_nn_gru(getkey):
    # Not skipped without torch: the test extra installs it, and a missing torch must fail.
    import torch

    import zoo

    seed = int(jr.randint(getkey(), (), 0, 2**31 - 1))
    torch.manual_seed(seed)
    in_size, hidden, time = 3, 5, 11
    gru = torch.nn.GRU(in_size, hidden, batch_first=True)
    params = {name: p.detach().numpy() for name, p in gru.named_parameters()}
    cell = _zoo_cell_from_torch(
        params["weight_ih_l0"],
        params["weight_hh_l0"],
        params["bias_ih_l0"],
        params["bias_hh_l0"],
        getkey,
    )
    model = zoo.GRU(
        in_size=in_size,
        hidden_size=hidden,
        learn_initial_state=False,
        input_projection=False,
        reset_after=True,
        key=getkey(),
    )
    assert model.encoder.embed is None and model.encoder.cell.in_size == in_size
    model = eqx.tree_at(lambda m: m.encoder.cell, model, cell)
    xs = np.array(jr.normal(getkey(), (4, time, in_size)))  # writable, for torch.from_numpy
    with torch.no_grad():
        want = gru(torch.from_numpy(xs))[0].numpy()
    got = jax.vmap(model.encoder)(jnp.asarray(xs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # One step, from a non-zero state, against torch.nn.GRUCell with the same weights.
    torch_cell = torch.nn.GRUCell(in_size, hidden)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(torch_cell, name).copy_(getattr(gru, name + "_l0"))
        h = np.asarray(jr.normal(getkey(), (hidden,)))
        step = torch_cell(torch.from_numpy(xs[0, :1]), torch.from_numpy(h[None]))[0].numpy()
    np.testing.assert_allclose(
        cell(jnp.asarray(xs[0, 0]), jnp.asarray(h)), step, rtol=1e-5, atol=1e-6
    )
    # The tutorial form with the same weights is a different function.
    tutorial = eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias),
        zoo.GRUCell(in_size, hidden, key=getkey()),
        (cell.weight_ih, cell.weight_hh, cell.bias),
    )
    other = tutorial(jnp.asarray(xs[0, 0]), jnp.asarray(h))
    assert not np.allclose(other, step, rtol=1e-3, atol=1e-4)


def test_gru_classifier_over_raw_features(getkey):
    import zoo

    model = zoo.GRUClassifier(in_size=1, hidden_size=6, input_projection=False, key=getkey())
    assert model.encoder.embed is None
    assert model.encoder.cell.weight_ih.shape == (18, 1)
    xs = jr.normal(getkey(), (3, 40, 1))
    assert jax.vmap(model)(xs).shape == (3, 10)
    # Against a Python loop over the cell.
    h = jnp.zeros(6)
    for x in xs[0]:
        h = model.encoder.cell(x, h)
    np.testing.assert_allclose(model(xs[0]), model.readout(h), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"argument `xs` must have shape \(time, 1\)"):
        model(jnp.ones((40, 2)))


# ---------------------------------------------------------------- one-call initialisation


def test_one_call_initialisation_gives_the_eager_values(getkey):
    """compiled_init must not change a single bit: bundled weights were trained from values
    drawn eagerly, by the same layer-building functions called without it."""
    import zoo
    from zoo.models import _convnet, _gru, _mlp

    key = getkey()
    cases = [
        (_mlp._init_linears, ((7, 5, 5, 3), None)),
        (
            _convnet._init_layers,
            (
                2,
                (1, 3),
                (3, 4),
                ((5, 5), (3, 3)),
                ((2, 2),) * 2,
                "SAME",
                (True, False),
                0.99,
                (4 * 3 * 3, 6, 10),
                None,
            ),
        ),
        (_convnet._init_layers, (1, (2,), (5,), ((5,),), ((2,),), 2, (False,), 0.9, (50, 3), None)),
        (_gru._init_sequence_model, ("GRU", 1, 4, 1, True, True, True, None)),
        (_gru._init_sequence_model, ("GRUClassifier", 3, 4, 10, False, False, False, None)),
    ]
    for fn, hyper in cases:
        fast = fn(*hyper, key)
        eager = fn.__wrapped__(*hyper, key)
        fast_leaves = jax.tree.leaves(eqx.filter(fast, eqx.is_array))
        eager_leaves = jax.tree.leaves(eqx.filter(eager, eqx.is_array))
        assert len(fast_leaves) == len(eager_leaves) > 0
        for a, b in zip(fast_leaves, eager_leaves, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The second build of a configuration reuses the compiled call, with a new key's values.
    one = zoo.MLP(in_size=7, width=5, num_classes=3, key=key)
    two = zoo.MLP(in_size=7, width=5, num_classes=3, key=getkey())
    assert not np.array_equal(one.layers[0].weight, two.layers[0].weight)
    with jax.disable_jit():  # still builds (eagerly, primitive by primitive)
        assert zoo.MLP(in_size=7, width=5, num_classes=3, key=key).layers[0].weight.shape == (
            5,
            7,
        )


@pytest.mark.parametrize("name", ["mlp_mnist", "cnn_mnist", "gru_ou"])
def test_construction_inside_a_trace_is_inlined(name):
    import zoo

    model, state = eqx.filter_eval_shape(zoo.create_model, name)
    leaves = jax.tree.leaves((model, state))
    assert any(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert not any(isinstance(x, jax.Array) for x in leaves)  # nothing was computed


# ------------------------------------------------ edge cases that used to corrupt state


def _small_bn_models(getkey):
    """A ConvNet and a ResNet with BatchNorm, each with its state and a matching input."""
    import zoo

    cnn, cnn_state = eqx.nn.make_with_state(zoo.ConvNet)(
        channels=(4,), kernel_sizes=3, strides=1, batch_norm=True, in_size=6, key=getkey()
    )
    resnet, resnet_state = eqx.nn.make_with_state(zoo.ResNet)(
        layers=(1,), widths=(4,), stem="small", stem_width=4, in_channels=1, num_classes=3,
        key=getkey(),
    )  # fmt: skip
    return [("ConvNet", cnn, cnn_state), ("ResNet", resnet, resnet_state)]


@pytest.mark.parametrize("which", [0, 1])
def test_batch_norm_refuses_an_empty_training_batch(getkey, which):
    """The old code stored NaN running statistics (0/0) for an empty batch, silently."""
    name, model, state = _small_bn_models(getkey)[which]
    with pytest.raises(ValueError, match=f"{name}: a training-mode BatchNorm call got an empty"):
        _bn_vmap(model)(jnp.zeros((0, 1, 6, 6)), state)
    with pytest.raises(ValueError, match="empty batch"):
        jax.jit(_bn_vmap(model))(jnp.zeros((0, 1, 6, 6)), state)
    # A real batch still updates finite statistics; inference on an empty batch is fine.
    _, new_state = _bn_vmap(model)(jr.normal(getkey(), (3, 1, 6, 6)), state)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_state))
    y, _ = _bn_vmap(eqx.nn.inference_mode(model))(jnp.zeros((0, 1, 6, 6)), state)
    assert y.shape[0] == 0


@pytest.mark.parametrize("which", [0, 1])
def test_unbatched_training_call_says_how_to_batch(getkey, which):
    """Without vmap JAX said only "unbound axis name: batch"."""
    name, model, state = _small_bn_models(getkey)[which]
    x = jr.normal(getkey(), (1, 6, 6))
    with pytest.raises(ValueError) as e:
        model(x, state)
    message = str(e.value)
    assert message.startswith(f"{name}: a training-mode model with BatchNorm")
    assert 'jax.vmap(model, axis_name="batch"' in message
    assert "eqx.nn.inference_mode(model)" in message
    # What the message advises works.
    y, _ = eqx.nn.inference_mode(model)(x, state)
    y_batched, _ = _bn_vmap(model)(x[None], state)
    assert y.shape == y_batched.shape[1:]


_BOOL_CASES = {
    "ConvNet(batch_norm='no')": "`batch_norm`",
    "ConvNet(batch_norm='false')": "`batch_norm`",
    "ConvNet(batch_norm=(True, 'no', True, False))": "`batch_norm[1]`",
    "GRU(learn_initial_state='no')": "GRU: `learn_initial_state`",
    "GRU(input_projection='no')": "GRU: `input_projection`",
    "GRU(reset_after='no')": "GRU: `reset_after`",
    "GRUClassifier(learn_initial_state='no')": "GRUClassifier: `learn_initial_state`",
    "GRUCell(2, 3, reset_after='yes')": "GRUCell: `reset_after`",
    "ResNet(zero_init_residual='no')": "ResNet: `zero_init_residual`",
    "create_model('cnn_mnist', batch_norm='no')": "ConvNet: `batch_norm`",
}


def test_bool_arguments_refuse_strings():
    """`bool("no")` is True: "no" used to switch BatchNorm (or a learned initial state) on.

    Run in a fresh process without the test suite's import hook: with it, beartype refuses
    a str for a `bool` annotation first; users (and configs read from JSON) do not have it."""
    code = textwrap.dedent(
        """
        import json, sys
        import jax.random as jr, numpy as np
        import zoo
        from zoo import ConvNet, GRU, GRUClassifier, GRUCell, ResNet, create_model
        out = {}
        for case in json.loads(sys.argv[1]):
            try:
                eval(case)
            except Exception as e:
                out[case] = f"{type(e).__name__}: {e}"
            else:
                out[case] = "accepted"
        k = jr.PRNGKey(0)
        m = ConvNet(batch_norm=np.bool_(False), key=k)
        out["numpy"] = [m.batch_norm == (False,) * 4, GRU(learn_initial_state=np.False_,
                        key=k).encoder.initial_state is None]
        print(json.dumps(out))
        """
    )
    cases = [c[:-1] + ", key=jr.PRNGKey(0))" for c in _BOOL_CASES]
    env = {k: v for k, v in os.environ.items() if k != "ZOO_TYPECHECK"}
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for case, argument in zip(cases, _BOOL_CASES.values(), strict=True):
        assert out[case].startswith("ValueError: "), (case, out[case])
        assert f"{argument} must be True or False, got" in out[case], (case, out[case])
    assert out["numpy"] == [True, True]
