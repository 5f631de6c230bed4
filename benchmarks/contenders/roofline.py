"""The hardware limit: model FLOPs per step over the machine's matmul rate, both measured here.

The roofline of a workload is `matmul rate / training FLOPs per step`, the steps per second a
step would reach if every FLOP ran at the speed of a big square matmul. Training FLOPs count
the work a step really does in its dense and conv layers: forward 2, weight gradient 2 and
input gradient 2 FLOPs per multiply-add and example, less the first layer's input gradient,
which no step computes (the data needs no gradient; XLA drops it): the MLP at batch 100 is
0.321 GFLOP, not the `6 x multiply-adds x batch` = 0.401 of the usual rule. Element-wise
work, the optimiser and BatchNorm are left out, so the roofline is an upper bound. The rate
is the best of JAX's `jnp.dot` and torch's `mm` of two big square float32 matrices (the same
measurement as `benchmarks/engine.py`'s roofline, plus torch's), so one library's slower
matmul cannot lower the bar.

A model's own matmuls run well below that rate (`dense_diagnostic`: batch-100 shapes), so the
bound a step can actually approach is the time of those matmuls alone, reported beside it.
"""

import json
import os
import time
from collections.abc import Callable

import numpy as np

from . import _workloads as W


def forward_macs(weights: W.Weights) -> int:
    """Multiply-adds of one example's forward pass through the dense and conv layers."""
    if isinstance(weights, W.MLPWeights):
        return sum(k.size for k, _ in weights.layers)
    if isinstance(weights, W.ConvNetWeights):
        # Each output position of a conv costs out x in x kh x kw multiply-adds.
        convs = sum(h * w * k.size for (k, _), (h, w) in zip(weights.convs, _sizes(weights)))
        return convs + weights.head[0].size
    steps = W.OU_CONFIG.steps - 1
    per_step = (
        weights.embed[0].size + weights.weight_ih.size + weights.weight_hh.size
    ) + weights.readout[0].size
    return steps * per_step


def first_layer_macs(weights: W.Weights) -> int:
    """Multiply-adds of one example's first layer (whose input gradient no step computes)."""
    if isinstance(weights, W.MLPWeights):
        return weights.layers[0][0].size
    if isinstance(weights, W.ConvNetWeights):
        (h, w), (k, _) = _sizes(weights)[0], weights.convs[0]
        return h * w * k.size
    return (W.OU_CONFIG.steps - 1) * weights.embed[0].size


def train_flops(weights: W.Weights, batch_size: int) -> float:
    """FLOPs of one training step: `6 x multiply-adds x batch` less the first layer's input
    gradient (`2 x its multiply-adds x batch`)."""
    return (6.0 * forward_macs(weights) - 2.0 * first_layer_macs(weights)) * batch_size


def _jax_matmul_gflops(n: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    a = jr.normal(jr.PRNGKey(0), (n, n), jnp.float32)
    b = jr.normal(jr.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(dot(a, b))
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _torch_matmul_gflops(n: int, repeats: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    from .torch_eager import cores

    torch.set_num_threads(cores())
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def matmul_rates(quick: bool) -> dict[str, float | None]:
    """The float32 matmul rate of JAX and of torch, GFLOP/s (`None`: torch not installed)."""
    n = 1024 if quick else 2048
    return {
        "jax_gflops": _jax_matmul_gflops(n, 5 if quick else 10),
        "torch_gflops": _torch_matmul_gflops(n, 5 if quick else 10),
        "size": n,
    }


def best_rate(*measurements: dict) -> float:
    """The highest rate seen in any measurement, GFLOP/s."""
    rates = [m[k] for m in measurements for k in ("jax_gflops", "torch_gflops")]
    return max(r for r in rates if r is not None)


def _median_ms(repeats: int, fn, *args) -> float:
    """Median wall time of `fn(*args)` over `repeats` calls after a warm-up call, in ms,
    waiting for JAX outputs to be computed (other outputs are ready on return)."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def dense_diagnostic(weights: W.MLPWeights, batch_size: int, repeats: int) -> dict:
    """The MLP's own matmuls alone, in XLA: forward, weight gradients and input gradients
    (none for the first layer's input), in ms and GFLOP/s.

    These shapes (a contraction over the batch of 100 for the weight gradients, say) run well
    below a big square matmul's rate, so this is the bound a training step of this model can
    actually approach; the roofline above is the hardware's.
    """
    fn, args = dense_kernels(weights, batch_size)
    ms = _median_ms(repeats, fn, *args)
    flops = train_flops(weights, batch_size)  # the same count: no first-layer input gradient
    return {"gflop": flops / 1e9, "xla_ms": ms, "xla_gflops": flops / (ms / 1e3) / 1e9}


def kernels_alone(weights: W.Weights, batch_size: int) -> tuple[Callable, tuple] | None:
    """`(fn, args)`: the jitted kernels a training step of this model cannot do without,
    for timing beside the step itself (`benchmarks.run` interleaves them with the
    contenders): the MLP's matmuls, the ConvNet's convolutions in XLA; `None` for others."""
    if isinstance(weights, W.MLPWeights):
        return dense_kernels(weights, batch_size)
    if isinstance(weights, W.ConvNetWeights):
        return conv_kernels(weights, batch_size)
    return None


def dense_kernels(weights: W.MLPWeights, batch_size: int) -> tuple[Callable, tuple]:
    """`(fn, args)` of `dense_diagnostic`: the matmuls of one MLP training step, jitted."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    kernels = [jnp.asarray(k.T) for k, _ in weights.layers]  # (in, out)
    x = jnp.asarray(rng.random((batch_size, kernels[0].shape[0]), np.float32))
    grads = [jnp.asarray(rng.random((batch_size, k.shape[1]), np.float32)) for k in kernels]

    def matmuls(kernels, x, grads):
        inputs, h = [], x
        for k in kernels:
            inputs.append(h)
            h = h @ k
        out = [h]
        for i, (k, a, g) in enumerate(zip(kernels, inputs, grads)):
            out.append(a.T @ g)  # the weight gradient
            if i:
                out.append(g @ k.T)  # the gradient of the layer's input
        return out

    return jax.jit(matmuls), (kernels, x, grads)


def _conv_stack(weights: W.ConvNetWeights, conv: Callable) -> Callable:
    """The gradient of the conv layers alone (bias, ReLU; no BatchNorm, no head)."""
    import jax
    import jax.numpy as jnp

    def loss(convs, x):
        for (k, b), s in zip(convs, weights.strides):
            x = jax.nn.relu(conv(x, k, s) + b.reshape(1, 1, 1, -1))
        return jnp.sum(x)

    return jax.grad(loss)


def _lax_conv(x, k, s):
    import jax

    return jax.lax.conv_general_dilated(
        x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_inputs(weights: W.ConvNetWeights, batch_size: int) -> tuple:
    import jax.numpy as jnp

    from . import raw_jax

    params, _ = raw_jax.cnn_params(weights)
    x = jnp.asarray(np.random.default_rng(0).random((batch_size, 28, 28, 1), np.float32))
    return params["convs"], x


def conv_kernels(weights: W.ConvNetWeights, batch_size: int) -> tuple[Callable, tuple]:
    """`(fn, args)` of `conv_diagnostic`'s XLA timing: the conv layers' forward, weight and
    input gradients (none for the first layer's input), jitted."""
    import jax

    return jax.jit(_conv_stack(weights, _lax_conv)), _conv_inputs(weights, batch_size)


def conv_diagnostic(weights: W.ConvNetWeights, batch_size: int, repeats: int) -> dict:
    """Forward and backward of the conv layers alone (weight gradients, and the input
    gradients a step needs), XLA's convolution (`xla_*`, NHWC/HWIO), zoo's `conv_gemm`
    (`gemm_*`) and torch's, in ms and GFLOP/s; `*_scan_ms` inside a one-step `lax.scan`.

    Where XLA's CPU convolutions are the bottleneck, zoo's ConvNet step cannot beat a
    library with faster convolution kernels, whatever its dispatch; this shows by how much.
    """
    import jax

    from zoo.models import conv_gemm

    convs, x = _conv_inputs(weights, batch_size)

    def in_scan(grad):
        # The same work as the body of a one-step `lax.scan`, as zoo's K-step dispatch runs it.
        return lambda convs, x: jax.lax.scan(lambda c, _: (c, grad(c, x)), convs, None, length=1)[1]

    def gemm_conv(x, k, s):
        return conv_gemm(x, k, s, "SAME")

    macs = sum(k.size * h * w for (k, _), (h, w) in zip(weights.convs, _sizes(weights)))
    first = weights.convs[0][0].size * _sizes(weights)[0][0] * _sizes(weights)[0][1]
    flops = (6.0 * macs - 2.0 * first) * batch_size  # no input gradient for the first layer
    out: dict = {"gflop": flops / 1e9}
    for name, conv in (("xla", _lax_conv), ("gemm", gemm_conv)):
        grad = _conv_stack(weights, conv)
        out[f"{name}_ms"] = _median_ms(repeats, jax.jit(grad), convs, x)
        out[f"{name}_scan_ms"] = _median_ms(repeats, jax.jit(in_scan(grad)), convs, x)
        out[f"{name}_gflops"] = flops / (out[f"{name}_ms"] / 1e3) / 1e9
    try:
        import torch

        from .torch_eager import ConvNet, cores
    except ImportError:
        return out
    torch.set_num_threads(cores())
    net = ConvNet(weights)
    xt = torch.from_numpy(np.array(x)[..., 0]).unsqueeze(1)

    def torch_stack():
        net.zero_grad(set_to_none=True)
        y = xt
        for conv, pad in zip(net.convs, net.pads):
            y = torch.relu(conv(y if pad is None else torch.nn.functional.pad(y, pad)))
        y.sum().backward()

    out["torch_ms"] = _median_ms(repeats, torch_stack)  # torch runs eagerly: nothing to wait on
    out["torch_gflops"] = flops / (out["torch_ms"] / 1e3) / 1e9
    return out


def _sizes(weights: W.ConvNetWeights) -> list[tuple[int, int]]:
    h = w = 28
    out = []
    for s in weights.strides:
        h, w = -(-h // s), -(-w // s)
        out.append((h, w))
    return out


# --- experiments: XLA flags and buffer donation, against the matmul bound ------------------

#: XLA:CPU options that route dots to other kernels (`XLA_FLAGS=--help` lists them).
FLAG_CONFIGS: dict[str, str] = {
    "default": "",
    "xnn dot fusion": "--xla_cpu_experimental_xnn_fusion_type=+dot",
    "ynn dot fusion": "--xla_cpu_experimental_ynn_fusion_type=+dot",
    "xnn graph fusion": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "onednn": "--xla_cpu_use_onednn=true",
    "no xnnpack": "--xla_cpu_use_xnnpack=false",
}


def _mlp_weights() -> W.MLPWeights:
    from . import setup

    weights = setup("mlp").weights
    assert isinstance(weights, W.MLPWeights)
    return weights


def flag_experiment(rounds: int, repeats: int, configs: dict[str, str] | None = None) -> dict:
    """The MLP's own matmuls alone (`dense_diagnostic`, batch 100) and a big square matmul,
    each XLA flag setting in a fresh process (flags are read once per process), the settings
    interleaved round by round; medians over the rounds, in ms and GFLOP/s.

    A setting the installed jaxlib rejects is reported with its error.
    """
    import subprocess
    import sys

    configs = FLAG_CONFIGS if configs is None else configs
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    errors: dict[str, str] = {}
    for _ in range(rounds):
        for name, flags in configs.items():
            if name in errors:
                continue
            env = {**os.environ, "XLA_FLAGS": flags}
            code = (
                "import json; from benchmarks.contenders import roofline as r; "
                f"print(json.dumps(r._flag_probe({repeats})))"
            )
            p = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env
            )
            if p.returncode:
                errors[name] = (p.stderr.strip().splitlines() or ["failed"])[-1]
                continue
            runs[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
    out: dict = {}
    for name, rs in runs.items():
        if name in errors:
            out[name] = {"flags": configs[name], "error": errors[name]}
            continue
        out[name] = {
            "flags": configs[name],
            "matmul_ms": float(np.median([r["xla_ms"] for r in rs])),
            "matmul_gflops": float(np.median([r["xla_gflops"] for r in rs])),
            "square_gflops": float(np.median([r["square_gflops"] for r in rs])),
        }
    return out


def _flag_probe(repeats: int) -> dict:
    d = dense_diagnostic(_mlp_weights(), 100, repeats)
    return {**d, "square_gflops": _jax_matmul_gflops(1024, 5)}


def donation_experiment(rounds: int, steps: int) -> dict:
    """Plain-JAX MLP training steps (Adam, batch 100), `jax.jit` with and without donating
    the parameters and optimiser state, interleaved block by block: median ms per step.

    Donation lets XLA write the new parameters into the old ones' buffers instead of
    allocating; zoo's own runner is not changed here (the engine owns it)."""
    import jax
    import optax

    from . import raw_jax

    weights = _mlp_weights()
    rng = np.random.default_rng(0)
    batch = {
        "image": jax.device_put(rng.random((100, 28, 28), np.float32)),
        "label": jax.device_put(rng.integers(0, 10, 100).astype(np.int32)),
    }
    tx = optax.adam(1e-3)

    def update(params, opt_state, batch):
        def loss(p):
            logits = raw_jax.mlp_predict(p, batch["image"])
            return raw_jax._cross_entropy(logits, batch["label"])

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    variants = {"no donation": jax.jit(update), "donated": jax.jit(update, donate_argnums=(0, 1))}
    states = {}
    for name, fn in variants.items():
        params = raw_jax.mlp_params(weights)
        state = (params, tx.init(params))
        for _ in range(3):  # compile and warm up
            state = fn(*state, batch)[:2]
        states[name] = jax.block_until_ready(state)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants)[r % 2 :] + list(variants)[: r % 2]
        for name in order:
            fn, state = variants[name], states[name]
            t = time.perf_counter()
            for _ in range(steps):
                state = fn(*state, batch)[:2]
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - t) / steps)
            states[name] = state
    return {name: 1e3 * float(np.median(v)) for name, v in times.items()}


def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description="XLA flag and donation experiments (MLP)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    result = {
        "loadavg_start": [float(v) for v in open("/proc/loadavg").read().split()[:3]],
        "flags": flag_experiment(args.rounds, args.repeats),
        "donation_ms_per_step": donation_experiment(max(3, args.rounds * 2), 50),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from pathlib import Path

        path = Path(args.out)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return result


if __name__ == "__main__":
    main()
