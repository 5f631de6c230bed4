"""Where a ConvNet training step's time goes on XLA:CPU: the whole step, the same step
without BatchNorm, and (for the experiment's CNN) its convolutions alone.

    python -m benchmarks.step_parts              # about a minute
    python -m benchmarks.step_parts --repeats 5  # quicker

For the MNIST experiment's CNN (`zoo.ConvNet()`) and the strong preset's (two conv3-BN-
ReLU-maxpool2 blocks, dense 256 with dropout), batch 100, Adam, one
`zoo.train.TrainStep` call per step on a device batch, as `fit` runs the recipe (K=1):

- `step`: the model as the recipes build it;
- `no batchnorm`: the same model with `batch_norm=False`, so the difference is what its
  BatchNorm layers cost, forward and backward;
- `convs alone`: the conv layers' forward and gradients with bias and ReLU, batched, in
  XLA's canonical layout (`benchmarks.contenders.roofline.conv_kernels`, the bound that
  `benchmarks.run` holds the step to). The strong network pools, which that bound does not
  model, so it has none.

The variants are interleaved round by round (medians), so that a shared machine slows them
alike; compare within one run.
"""

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import zoo
import zoo.train

from ._cli import timing_main
from .contenders import _workloads as W, roofline

BATCH = 100
# The recipes' two presets, by their registered architectures.
NETWORKS = {"experiment": "cnn_mnist", "strong": "cnn_mnist_strong"}


def step_function(arch: str, batch_size: int, **kwargs) -> Callable[[], Any]:
    """A no-argument call running one `zoo.train.TrainStep` (the single step `fit` calls
    with the recipe's K=1; Adam, the recipe's loss) of the registered ConvNet `arch`, built
    with `kwargs`, on a fixed random batch; it returns `(train_state, metrics)`."""
    model, state = zoo.create_model(arch, key=jr.PRNGKey(0), **kwargs)
    size = model.in_size
    optimizer = optax.adam(1e-3)
    step = zoo.train.TrainStep(W.zoo_loss("cnn"), optimizer)
    train_state = zoo.train.init_train_state(model, optimizer, key=jr.PRNGKey(1), model_state=state)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.random((batch_size, *size), np.float32)),
        "label": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
    }
    return lambda: step(train_state, batch)


def network_functions(arch: str, batch_size: int = BATCH) -> dict[str, Callable[[], Any]]:
    """The timed variants of one network, each a no-argument call."""
    fns = {
        "step": step_function(arch, batch_size),
        "no batchnorm": step_function(arch, batch_size, batch_norm=False),
    }
    try:  # the bound covers plain conv stacks: `weights_of` refuses pools and dense layers
        weights = W.weights_of(zoo.create_model(arch, key=jr.PRNGKey(0))[0])
    except ValueError:
        return fns
    assert isinstance(weights, W.ConvNetWeights)
    kernels, args = roofline.conv_kernels(weights, batch_size)
    fns["convs alone"] = lambda: kernels(*args)
    return fns


def measure(repeats: int, calls: int = 5, networks: dict = NETWORKS, batch_size: int = BATCH):
    """ms per call of every variant of every network: medians over `repeats` interleaved
    rounds of `calls` calls each."""
    results = {}
    for name, arch in networks.items():
        fns = network_functions(arch, batch_size)
        for f in fns.values():
            jax.block_until_ready(f())  # compile outside the timing
        times: dict[str, list[float]] = {part: [] for part in fns}
        for _ in range(repeats):
            for part, f in fns.items():
                t = time.perf_counter()
                for _ in range(calls):
                    out = f()
                jax.block_until_ready(out)
                times[part].append((time.perf_counter() - t) / calls)
        results[name] = {part: 1e3 * float(np.median(v)) for part, v in times.items()}
    return results


def markdown(results: dict, loadavg: list[float]) -> str:
    lines = [
        "ConvNet training steps at batch 100, ms per step (median of interleaved rounds; "
        f"load average at start {loadavg}):",
        "",
        "| network | step | no batchnorm | BatchNorm's share | convs alone | step / convs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, ms in results.items():
        step, plain = ms["step"], ms["no batchnorm"]
        convs = ms.get("convs alone")
        share = f"{(step - plain) / step:.0%}"
        tail = f"{convs:.2f} | {step / convs:.2f}x" if convs else "n/a | n/a"
        lines.append(f"| {name} | {step:.2f} | {plain:.2f} | {share} | {tail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    return timing_main(__doc__, measure, markdown, 15, argv)


if __name__ == "__main__":
    main()
