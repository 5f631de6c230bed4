"""The contenders of the side-by-side benchmarks, each training the same workloads.

`setup(workload)` builds zoo's initial model once; `make(key, setup)` builds one contender
from it (its own copy of the same initial weights). Contenders' modules are imported only
when asked for, so that a missing Flax or PyTorch (CI installs neither) skips just those.

| key           | what it runs                                                      |
| ------------- | ----------------------------------------------------------------- |
| `zoo`         | zoo's default path: `TrainStep` + `fit`, K steps per dispatch      |
| `zoo_jit`     | zoo's model and loss, one `eqx.filter_jit` call per step           |
| `raw_jax`     | pure functions, `jax.jit` per step (classic JAX tutorial)          |
| `flax_jit`    | Flax NNX's default `nnx.jit` step                                  |
| `flax_cached` | Flax NNX, `nnx.cached_partial` (faster practice)                   |
| `flax_split`  | Flax NNX, `jax.jit` over `nnx.split` state (faster practice)       |
| `torch`       | PyTorch eager, CPU, threads = cores                                |
"""

import dataclasses
import importlib
from typing import Any

import jax

from . import _workloads
from ._base import Contender as Contender, PerStep as PerStep
from ._workloads import WORKLOADS as WORKLOADS, Workload as Workload

_WHERE = {
    "zoo": ("zoo_paths", "ZooDefault"),
    "zoo_jit": ("zoo_paths", "ZooFilterJit"),
    "raw_jax": ("raw_jax", "RawJax"),
    "flax_jit": ("flax_nnx", "FlaxJit"),
    "flax_cached": ("flax_nnx", "FlaxCachedPartial"),
    "flax_split": ("flax_nnx", "FlaxSplit"),
    "torch": ("torch_eager", "TorchEager"),
}
KEYS = tuple(_WHERE)


@dataclasses.dataclass(frozen=True)
class Setup:
    """A workload with zoo's initial model, its state, the training key, and the same
    initial weights in framework-neutral form."""

    workload: Workload
    model: Any
    model_state: Any
    train_key: jax.Array
    weights: _workloads.Weights


def setup(name: str, **model_kwargs) -> Setup:
    """Zoo's initial model for workload `name` (`"mlp"`, `"cnn"`, `"gru"`); `model_kwargs`
    change its size (tests)."""
    model, model_state, train_key = _workloads.zoo_model(name, **model_kwargs)
    return Setup(WORKLOADS[name], model, model_state, train_key, _workloads.weights_of(model))


def available(key: str) -> str | None:
    """`None` if contender `key` can run here, else why not (a missing package)."""
    try:
        importlib.import_module(f"{__name__}.{_WHERE[key][0]}")
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


def make(key: str, s: Setup, **options) -> Contender:
    """Build contender `key` on setup `s`; `options` go to its constructor."""
    module, cls = _WHERE[key]
    factory = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    if key.startswith("zoo"):
        return factory(s.workload, s.model, s.model_state, s.train_key, **options)
    return factory(s.workload, s.weights, **options)
