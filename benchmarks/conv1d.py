"""The MNIST-1D CNN as `zoo.ConvNet` against the same network written with `eqx.nn.Conv1d`.

Run `python -m benchmarks.conv1d` (`--quick` for a short smoke run). Both models are the 1-D
CNN of the MNIST-1D paper (three convolutions of 25 channels, kernel 5, stride 2, padding 2,
ReLU, then a linear head; 40-sample signals, 10 classes, 7,710 parameters), hold the same
weights, and are trained by the same step (one `eqx.filter_jit` region: softmax
cross-entropy, `eqx.filter_value_and_grad`, Adam) on the same synthetic batches. The script
prints the parameter counts, the largest difference between the two models' logits, the
startup cost (construction and first, compiling step) and the median time of a training
step for each, over interleaved rounds so that a change in the machine's load hits both.
"""

import argparse
import json
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import zoo

LENGTH, CLASSES, CHANNELS, BATCH = 40, 10, 25, 100


class EqxConv1dNet(eqx.Module):
    """The reference: the MNIST-1D CNN from `eqx.nn.Conv1d` and `eqx.nn.Linear`."""

    convs: tuple[eqx.nn.Conv1d, ...]
    head: eqx.nn.Linear

    def __init__(self, *, key):
        keys = jr.split(key, 4)
        ins = (1, CHANNELS, CHANNELS)
        self.convs = tuple(
            eqx.nn.Conv1d(i, CHANNELS, 5, stride=2, padding=2, key=k)
            for i, k in zip(ins, keys[:3], strict=True)
        )
        self.head = eqx.nn.Linear(CHANNELS * 5, CLASSES, key=keys[3])

    def __call__(self, x, *, key=None):
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.head(x.reshape(-1))


def build_zoo(key):
    return zoo.ConvNet(
        channels=(CHANNELS,) * 3,
        kernel_sizes=5,
        strides=2,
        padding=2,
        batch_norm=False,
        in_size=(LENGTH,),
        num_classes=CLASSES,
        key=key,
    )


def with_weights_of(reference: EqxConv1dNet, model: zoo.ConvNet) -> EqxConv1dNet:
    """`reference` holding `model`'s weights, so both compute the same function."""
    for i, conv in enumerate(model.convs):
        reference = eqx.tree_at(
            lambda r, i=i: (r.convs[i].weight, r.convs[i].bias),
            reference,
            (conv.weight, conv.bias),
        )
    return eqx.tree_at(
        lambda r: (r.head.weight, r.head.bias),
        reference,
        (
            model.head.weight,
            model.head.bias,
        ),
    )


def make_step(optimizer):
    @eqx.filter_jit
    def step(model, opt_state, x, y):
        def loss(m):
            logits = jax.vmap(m)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, value

    return step


def params(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps timed per round")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    steps = args.steps or (20 if args.quick else 200)

    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((BATCH, 1, LENGTH)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, CLASSES, BATCH).astype(np.int32))
    optimizer = optax.adam(1e-3)

    start = time.perf_counter()
    zoo_model = build_zoo(jr.PRNGKey(0))
    jax.block_until_ready(jax.tree.leaves(zoo_model))
    build_s = {"zoo.ConvNet": time.perf_counter() - start}
    start = time.perf_counter()
    eqx_model = EqxConv1dNet(key=jr.PRNGKey(1))
    jax.block_until_ready(jax.tree.leaves(eqx_model))
    build_s["eqx.nn.Conv1d"] = time.perf_counter() - start
    eqx_model = with_weights_of(eqx_model, zoo_model)
    gap = float(jnp.max(jnp.abs(jax.vmap(zoo_model)(xs) - jax.vmap(eqx_model)(xs))))

    models = {"zoo.ConvNet": zoo_model, "eqx.nn.Conv1d": eqx_model}
    state = {}
    first_step_s = {}
    for name, model in models.items():
        step = make_step(optimizer)
        opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
        start = time.perf_counter()
        model, opt_state, loss = step(model, opt_state, xs, ys)
        jax.block_until_ready(loss)
        first_step_s[name] = time.perf_counter() - start
        state[name] = (step, model, opt_state)

    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name in models:  # interleaved: drifting load reaches both contenders alike
            step, model, opt_state = state[name]
            start = time.perf_counter()
            for _ in range(steps):
                model, opt_state, loss = step(model, opt_state, xs, ys)
            jax.block_until_ready(loss)
            times[name].append(1e3 * (time.perf_counter() - start) / steps)
            state[name] = (step, model, opt_state)

    result = {
        "parameters": {name: params(m) for name, m in models.items()},
        "max_logit_difference": gap,
        "construction_s": build_s,
        "first_step_s": first_step_s,
        "step_ms_median": {name: statistics.median(t) for name, t in times.items()},
        "step_ms_rounds": times,
        "batch": BATCH,
        "rounds": rounds,
        "steps_per_round": steps,
    }
    ratio = result["step_ms_median"]["zoo.ConvNet"] / result["step_ms_median"]["eqx.nn.Conv1d"]
    result["zoo_over_eqx"] = ratio
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
