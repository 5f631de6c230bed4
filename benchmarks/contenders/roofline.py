"""The hardware limit: model FLOPs per step over the machine's matmul rate, both measured here.

The roofline of a workload is `matmul rate / training FLOPs per step`, the steps per second a
step would reach if every FLOP ran at the speed of a big square matmul. Training FLOPs are
the usual `6 x multiply-adds x batch` (forward 2, backward 4) of the dense and conv layers;
element-wise work, the optimiser and BatchNorm are left out, so the roofline is an upper
bound. The rate is the best of JAX's `jnp.dot` and torch's `mm` of two big square float32
matrices (the same measurement as `benchmarks/engine.py`'s roofline, plus torch's), so one
library's slower matmul cannot lower the bar.
"""

import time

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


def train_flops(weights: W.Weights, batch_size: int) -> float:
    """FLOPs of one training step: `6 x multiply-adds x batch`."""
    return 6.0 * forward_macs(weights) * batch_size


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

    ms = _median_ms(repeats, jax.jit(matmuls), kernels, x, grads)
    # What these matmuls compute: `6 x multiply-adds x batch` less the first layer's input
    # gradient, which no training step needs (XLA drops it from zoo's step too).
    flops = train_flops(weights, batch_size) - 2.0 * kernels[0].size * batch_size
    return {"gflop": flops / 1e9, "xla_ms": ms, "xla_gflops": flops / (ms / 1e3) / 1e9}


def conv_diagnostic(weights: W.ConvNetWeights, batch_size: int, repeats: int) -> dict:
    """Forward and backward of the conv layers alone, XLA against torch, in ms and GFLOP/s.

    Where XLA's CPU convolutions are the bottleneck, zoo's ConvNet step cannot beat a
    library with faster convolution kernels, whatever its dispatch; this shows by how much.
    """
    import jax
    import jax.numpy as jnp

    from . import raw_jax

    params, _ = raw_jax.cnn_params(weights)
    convs = params["convs"]
    x = jnp.asarray(np.random.default_rng(0).random((batch_size, 28, 28, 1), np.float32))

    def conv_stack(convs, x):
        for (k, b), s in zip(convs, weights.strides):
            x = jax.lax.conv_general_dilated(
                x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = jax.nn.relu(x + b)
        return jnp.sum(x)

    grad = jax.grad(conv_stack)

    def in_scan(convs, x):
        # The same work as the body of a one-step `lax.scan`, as zoo's K-step dispatch runs it.
        return jax.lax.scan(lambda c, _: (c, grad(c, x)), convs, None, length=1)[1]

    macs = sum(k.size * h * w for (k, _), (h, w) in zip(weights.convs, _sizes(weights)))
    flops = 6.0 * macs * batch_size
    out = {
        "gflop": flops / 1e9,
        "xla_ms": _median_ms(repeats, jax.jit(grad), convs, x),
        "xla_scan_ms": _median_ms(repeats, jax.jit(in_scan), convs, x),
    }
    out["xla_gflops"] = flops / (out["xla_ms"] / 1e3) / 1e9
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
