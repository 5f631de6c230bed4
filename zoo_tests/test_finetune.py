"""Trainable filters: frozen leaves, optimiser state, a linear probe against hand-written
Equinox + optax, resume, frozen BatchNorm statistics."""

from typing import Any

import _train_helpers as h
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import zoo.train as zt


def _mlp(key):
    # Two hidden layers: the probe trains only the last Linear.
    return eqx.nn.MLP(h.FEATURES, 2, 16, 2, key=key)


def _probe_step(lr=1e-2, **kwargs):
    return zt.TrainStep(
        zt.classification_loss(input_key="x", label_key="y"), optax.adam(lr), **kwargs
    )


def _batches(n):
    it = iter(h.dataset())
    return [next(it) for _ in range(n)]


def test_frozen_leaves_stay_bit_identical(getkey):
    model = _mlp(getkey())
    spec = zt.trainable_filter(model, include="layers.2.*")
    ts0 = zt.init_train_state(model, optax.adam(1e-2), key=getkey(), trainable=spec)
    step = _probe_step()
    ts = ts0
    for batch in _batches(5):
        ts, _ = step(ts, batch)
    for i, layer in enumerate(ts.model.layers):
        before = ts0.model.layers[i]
        for name in ("weight", "bias"):
            new, old = np.asarray(getattr(layer, name)), np.asarray(getattr(before, name))
            if i == 2:
                assert not np.array_equal(new, old), f"layers.{i}.{name} did not train"
            else:
                np.testing.assert_array_equal(new, old)


def test_optimiser_state_holds_nothing_for_frozen_leaves(getkey):
    model = _mlp(getkey())
    spec = zt.trainable_filter(model, exclude=["layers.0.*", "layers.1.*"])
    ts = zt.init_train_state(model, optax.adam(1e-2), key=getkey(), trainable=spec)
    mu = ts.opt_state[0].mu
    assert mu.layers[0].weight is None and mu.layers[1].bias is None
    assert np.shape(mu.layers[2].weight) == model.layers[2].weight.shape
    moments = jax.tree.leaves(ts.opt_state[0].mu) + jax.tree.leaves(ts.opt_state[0].nu)
    probe_size = sum(np.size(a) for a in jax.tree.leaves(eqx.filter(model.layers[2], eqx.is_array)))
    assert sum(m.size for m in moments) == 2 * probe_size
    # Without a filter every inexact array has moments (as before filters existed).
    full = zt.init_train_state(model, optax.adam(1e-2), key=getkey())
    sizes = [x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))]
    assert sum(m.size for m in jax.tree.leaves(full.opt_state[0].mu)) == sum(sizes)


def test_linear_probe_matches_hand_written_partition_loop(getkey):
    model = _mlp(getkey())
    optimizer = optax.adam(3e-2)
    batches = _batches(6)
    # zoo: a callable filter on paths.
    ts = zt.init_train_state(
        model, optimizer, key=getkey(), trainable=lambda path: path.startswith("layers.2.")
    )
    step = zt.TrainStep(zt.classification_loss(input_key="x", label_key="y"), optimizer)
    losses = []
    for b in batches:
        ts, m = step(ts, b)
        losses.append(float(m["loss"]))

    # By hand, as Equinox's "freeze parameters" example.
    filter_spec = jax.tree.map(lambda _: False, model)
    filter_spec = eqx.tree_at(
        lambda m: (m.layers[2].weight, m.layers[2].bias), filter_spec, replace=(True, True)
    )
    diff, static = eqx.partition(model, filter_spec)
    opt_state = optimizer.init(diff)

    def loss(diff, static, x, y):
        logits = jax.vmap(eqx.combine(diff, static))(x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    want = []
    for b in batches:
        value, grads = eqx.filter_value_and_grad(loss)(diff, static, b["x"], b["y"])
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, diff)
        diff = eqx.apply_updates(diff, updates)
        want.append(float(value))
    np.testing.assert_allclose(losses, want, rtol=1e-5)
    hand = eqx.combine(diff, static)
    for a, b in zip(h.arrays_of(ts.model), h.arrays_of(hand), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_frozen_backbone_takes_no_backbone_gradients(getkey):
    """The probe's compiled step has no backward pass through the frozen layers: fewer
    matrix products than the full step (forward only, for the first two layers)."""
    model = _mlp(getkey())
    batch = _batches(1)[0]

    def dots(trainable):
        ts = zt.init_train_state(model, optax.sgd(0.1), key=getkey(), trainable=trainable)
        step = zt.TrainStep(zt.classification_loss(input_key="x", label_key="y"), optax.sgd(0.1))
        runner = zt.Runner(step, ts)
        text = step.compiled("single", runner.partition).lower(runner.leaves, batch).as_text()
        return text.count("dot_general")

    full, probe = dots(None), dots(zt.trainable_filter(model, include="layers.2.*"))
    # Full: 3 forward, 3 weight gradients, 2 input gradients. Probe: 3 forward, 1 weight
    # gradient.
    assert (full, probe) == (8, 4)


def test_resume_with_a_filter_is_bit_identical(tmp_path):
    def setup():
        model = _mlp(jr.PRNGKey(0))
        spec = zt.trainable_filter(model, include="layers.2.*")
        ts = zt.init_train_state(model, optax.adam(1e-2), key=jr.PRNGKey(1), trainable=spec)
        return ts, _probe_step()

    kwargs: dict[str, Any] = dict(steps_per_epoch=h.STEPS_PER_EPOCH, progress=False)
    ts, step = setup()
    full, _ = zt.fit(ts, step, h.dataset(), num_epochs=2, workdir=tmp_path / "a", **kwargs)
    ts, step = setup()
    zt.fit(ts, step, h.dataset(), num_epochs=1, workdir=tmp_path / "b", **kwargs)
    ts, step = setup()
    resumed, _ = zt.fit(
        ts, step, h.dataset(), num_epochs=2, workdir=tmp_path / "b", resume=True, **kwargs
    )
    assert resumed.trainable == full.trainable and any(full.trainable or ())
    for a, b in zip(h.arrays_of(resumed), h.arrays_of(full), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.model.layers[0].weight, ts.model.layers[0].weight)


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_norm_stats(freeze):
    model, state = h.make_model("stateful", jr.PRNGKey(0))
    assert isinstance(model, h.BNNet)
    spec = zt.trainable_filter(model, include="lin2.*")
    ts0 = zt.init_train_state(
        model, optax.adam(1e-2), key=jr.PRNGKey(1), model_state=state, trainable=spec
    )
    step = _probe_step(freeze_norm_stats=freeze)
    ts = ts0
    for b in _batches(3):
        ts, _ = step(ts, b)
    same = [np.array_equal(a, b) for a, b in zip(h.arrays_of(ts.model_state), h.arrays_of(state))]
    # Frozen statistics stay as they were; otherwise BatchNorm's running means move.
    assert all(same) if freeze else not all(same)
    np.testing.assert_array_equal(ts.model.lin1.weight, model.lin1.weight)
    assert not np.array_equal(ts.model.lin2.weight, model.lin2.weight)
    # The model itself is left in training mode.
    assert ts.model.norm.inference is False


def test_freeze_norm_stats_keeps_trainable_norms_training():
    model, state = h.make_model("stateful", jr.PRNGKey(0))
    spec = zt.trainable_filter(model, include=["lin2.*", "norm.*"])
    ts = zt.init_train_state(
        model, optax.adam(1e-2), key=jr.PRNGKey(1), model_state=state, trainable=spec
    )
    ts, _ = _probe_step(freeze_norm_stats=True)(ts, _batches(1)[0])
    assert not all(
        np.array_equal(a, b) for a, b in zip(h.arrays_of(ts.model_state), h.arrays_of(state))
    )


def test_filter_specs_and_errors(getkey):
    model = _mlp(getkey())
    # A prefix bool pytree, as Equinox's filter specs: whole layers at once.
    prefix = eqx.tree_at(
        lambda m: m.layers, jax.tree.map(lambda _: False, model), (False, False, True)
    )
    a = zt.init_train_state(model, optax.sgd(0.1), key=getkey(), trainable=prefix)
    b = zt.init_train_state(
        model,
        optax.sgd(0.1),
        key=getkey(),
        trainable=zt.trainable_filter(model, include="layers.2.*"),
    )
    assert a.trainable == b.trainable and sum(a.trainable or ()) == 2
    with pytest.raises(ValueError, match=r"leaves nothing to train.*layers\.0\.weight"):
        zt.trainable_filter(model, include="head.*")
    with pytest.raises(ValueError, match="bool pytree"):
        zt.init_train_state(model, optax.sgd(0.1), key=getkey(), trainable=[True, False])
    # A TrainStep given another filter than the train state's refuses to run.
    step = zt.TrainStep(
        zt.classification_loss(input_key="x", label_key="y"),
        optax.sgd(0.1),
        trainable=zt.trainable_filter(model, include="layers.1.*"),
    )
    with pytest.raises(ValueError, match="differs from the train state"):
        step(a, _batches(1)[0])
    same = zt.TrainStep(
        zt.classification_loss(input_key="x", label_key="y"), optax.sgd(0.1), trainable=prefix
    )
    same(a, _batches(1)[0])
