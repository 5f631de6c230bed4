"""The benchmark contenders train the same model on the same data: equal losses at step 0.

`python -m benchmarks.run` compares zoo with raw JAX, Flax NNX and PyTorch; the comparison
is only fair if each contender runs the same model from zoo's initial weights on the same
batches. Here every contender takes two optimiser steps on tiny inputs and must report the
loss zoo reports. Flax and PyTorch come with the `bench` extra only; without them their
contenders are skipped.
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

# `benchmarks/` is not an installed package: make the repository root importable under a
# bare `pytest` too (`python -m pytest` from the root already has it on the path).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ALL = ("zoo", "zoo_jit", "raw_jax", "flax_jit", "flax_cached", "flax_split", "torch")
# The Flax variants share one model and loss, and so do zoo's two paths: the bigger models
# check the code that differs between frameworks, the MLP every step function.
MODELS = ("zoo", "raw_jax", "flax_jit", "torch")


@pytest.fixture(autouse=True)
def _fast_prng():
    # Threefry's kernels take seconds each to compile on a small CPU, and building a model
    # draws from several of them; the tests compare contenders on whatever weights they get,
    # so the cheaper generator does as well.
    with jax.default_prng_impl("rbg"):
        yield


def _images(batch: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.random((batch, 28, 28), dtype=np.float32),
            "label": rng.integers(0, 10, batch).astype(np.int32),
        }
        for _ in range(n)
    ]


def _losses(name: str, keys, batches_for, **model_kwargs) -> dict[str, np.ndarray]:
    from benchmarks import contenders

    s = contenders.setup(name, **model_kwargs)
    batches = batches_for(s)
    out = {}
    for key in keys:
        why = contenders.available(key)
        if why is not None:
            assert not key.startswith("zoo"), why
            continue
        options = {"steps_per_dispatch": len(batches)} if key == "zoo" else {}
        # The contenders are ordinary user code, not zoo's: run them under JAX's default
        # promotion rules rather than the strict ones this test suite sets.
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            c = contenders.make(key, s, **options)
            out[key] = c.losses(batches)
    return out


def _check(losses: dict[str, np.ndarray]) -> None:
    ref = losses["zoo"]
    assert ref.shape == (2,) and np.all(np.isfinite(ref))
    for key, value in losses.items():
        assert value.shape == ref.shape, key
        np.testing.assert_allclose(value[0], ref[0], rtol=1e-5, err_msg=f"{key}, step 0")
        # After one update the weights differ by rounding only.
        np.testing.assert_allclose(value[1], ref[1], rtol=1e-4, err_msg=f"{key}, step 1")


def test_mlp_contenders_agree():
    _check(_losses("mlp", ALL, lambda s: _images(8, 2), width=32))


def test_convnet_contenders_agree():
    # BatchNorm normalises with the batch's statistics, SAME padding of strided convs is
    # asymmetric, and NHWC contenders flatten in another order: all must give zoo's loss.
    # Two conv layers (with and without BatchNorm) keep compilation short.
    small = dict(channels=(4, 4), kernel_sizes=(5, 3), batch_norm=(True, False))
    _check(_losses("cnn", MODELS, lambda s: _images(4, 2), **small))


def test_gru_contenders_agree():
    from benchmarks.contenders import _workloads

    # zoo generates its OU batches inside the step from the train state's key; the others
    # get the same batches made ahead from the same keys.
    _check(_losses("gru", MODELS, lambda s: _workloads.ou_batches(s.train_key, 2)))


def test_dense_diagnostic_counts_the_matmuls_it_runs():
    import jax.random as jr

    import zoo
    from benchmarks.contenders import _workloads as W, roofline

    weights = W.weights_of(zoo.MLP(in_size=6, num_classes=3, width=5, depth=1, key=jr.PRNGKey(0)))
    assert isinstance(weights, W.MLPWeights)
    d = roofline.dense_diagnostic(weights, 4, repeats=2)
    # Forward (6x5, 5x3), weight gradients (both), input gradient (the second layer's only).
    macs = 4 * (30 + 15) + 4 * (30 + 15) + 4 * 15
    assert d["gflop"] == pytest.approx(2 * macs / 1e9)
    assert d["xla_ms"] > 0 and d["xla_gflops"] == pytest.approx(d["gflop"] / d["xla_ms"] * 1e3)
