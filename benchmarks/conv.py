"""The experiment ConvNet's four conv layers alone, XLA's convolutions against im2col ones.

    python -m benchmarks.conv                      # the stack and the crossover sweep
    python -m benchmarks.conv --quick              # fewer repeats, a small sweep
    python -m benchmarks.conv --out benchmarks/results/conv.json

The stack is the MNIST experiment's (batch 100, 28x28x1 input; channels 32, 32, 10, 10;
kernels 5, 5, 3, 3; stride 2; SAME padding; bias and ReLU after each; the loss their sum,
differentiated for the weights only, as a training step needs). It is timed forward,
forward + backward, and per step inside a 5-step `lax.scan` (each step updates the weights,
so that nothing is hoisted out of the loop), for:

- `lax_oihw`: `lax.conv_general_dilated`, NHWC input, OIHW kernel (zoo's layout, batched);
- `lax_hwio`: the same, HWIO kernel (XLA:CPU's canonical layout, Flax NNX's);
- `gemm`: `conv_gemm`, XLA's forward (canonical layout) and the hand-written backward
  (im2col patches: strided slices + concatenate; one dot per gradient; col2im of pads);
- `col2im`: `conv_gemm(..., input_grad="col2im")`: the input gradient as one dot and a
  col2im of pads and adds instead of canonical convolutions;
- `im2col`: `conv_gemm(..., forward="gemm")`, the forward as patches and one dot too;
- `torch`: PyTorch `conv2d` (oneDNN) with as many threads as this process has cores.

The contenders are interleaved (A B C D A B C D ...) and each number is a median over the
repeats, so that a shared, noisy machine slows all of them alike; compare ratios within one
run. The crossover sweep then times single layers (forward + backward with the input
gradient, as a middle layer) over channels, kernels and map sizes, `gemm` against
`lax_hwio`, and checks `zoo.models.prefer_gemm` against what it measured.
"""

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

# Until zoo/models/__init__.py re-exports these (that file is another change's this round).
from zoo.models import conv_gemm, prefer_gemm

BATCH = 100
CHANNELS = (32, 32, 10, 10)
KERNELS = (5, 5, 3, 3)
STRIDE = 2
SCAN_STEPS = 5


def _same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def stack_params(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """HWIO kernels and biases of the four layers, He-scaled."""
    rng = np.random.default_rng(seed)
    ins = (1,) + CHANNELS[:-1]
    return [
        (
            (rng.standard_normal((k, k, i, o)) * math.sqrt(2 / (k * k * i))).astype(np.float32),
            (0.1 * rng.standard_normal(o)).astype(np.float32),
        )
        for i, o, k in zip(ins, CHANNELS, KERNELS)
    ]


def _lax_layer(layout: str) -> Callable:
    def layer(x, k, b, stride, padding):
        y = lax.conv_general_dilated(
            x, k, (stride, stride), padding, dimension_numbers=("NHWC", layout, "NHWC")
        )
        return y + b

    return layer


def _gemm_layer(x, k, b, stride, padding):
    return conv_gemm(x, k, stride, padding) + b


def _col2im_layer(x, k, b, stride, padding):
    return conv_gemm(x, k, stride, padding, input_grad="col2im") + b


def _im2col_layer(x, k, b, stride, padding):
    return conv_gemm(x, k, stride, padding, forward="gemm") + b


def jax_stack(layer: Callable):
    """`(params, x) -> loss` of the four layers, each kernel in the layout `layer` takes."""

    def loss(params, x):
        for k, b in params:
            x = jax.nn.relu(layer(x, k, b, STRIDE, "SAME"))
        return jnp.sum(x)

    return loss


def jax_modes(loss: Callable) -> dict[str, Callable]:
    grad = jax.grad(loss)

    def scan(params, x):
        def body(p, _):
            g = grad(p, x)
            return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), None

        return lax.scan(body, params, None, length=SCAN_STEPS)[0]

    return {"forward": jax.jit(loss), "forward+backward": jax.jit(grad), "scan": jax.jit(scan)}


def torch_modes(params, x: np.ndarray) -> dict[str, Callable] | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    ws = [
        torch.tensor(k.transpose(3, 2, 0, 1).copy(), requires_grad=True) for k, _ in params
    ]  # OIHW
    bs = [torch.tensor(b, requires_grad=True) for _, b in params]
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    def forward():
        y, size = xt, x.shape[1]
        for w, b, k in zip(ws, bs, KERNELS):
            lo, hi = _same(size, k, STRIDE)
            y = torch.relu(F.conv2d(F.pad(y, (lo, hi, lo, hi)), w, b, stride=STRIDE))
            size = -(-size // STRIDE)
        return y.sum()

    def backward():
        for p in ws + bs:
            p.grad = None
        forward().backward()

    def no_grad_forward():
        with torch.no_grad():
            return forward()

    return {"forward": no_grad_forward, "forward+backward": backward}


def interleaved(fns: dict[str, Callable], repeats: int, *args) -> dict[str, float]:
    """Median ms of each of `fns(*args)` over `repeats` rounds, the contenders called in
    turn within each round (order rotated each round), after one warm-up call each."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t = time.perf_counter()
            jax.block_until_ready(fns[key](*args))
            times[key].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def bench_stack(repeats: int) -> dict:
    """The four-layer stack: ms per call for every contender and mode."""
    params = stack_params()
    x = np.random.default_rng(1).random((BATCH, 28, 28, 1), np.float32)
    hwio = [(jnp.asarray(k), jnp.asarray(b)) for k, b in params]
    oihw = [(jnp.asarray(k.transpose(3, 2, 0, 1)), jnp.asarray(b)) for k, b in params]
    xj = jnp.asarray(x)
    contenders = {
        "lax_oihw": (jax_modes(jax_stack(_lax_layer("OIHW"))), oihw),
        "lax_hwio": (jax_modes(jax_stack(_lax_layer("HWIO"))), hwio),
        "gemm": (jax_modes(jax_stack(_gemm_layer)), hwio),
        "col2im": (jax_modes(jax_stack(_col2im_layer)), hwio),
        "im2col": (jax_modes(jax_stack(_im2col_layer)), hwio),
    }
    tm = torch_modes(params, x)
    out: dict[str, dict[str, float]] = {k: {} for k in contenders}
    if tm is not None:
        out["torch"] = {}
    for mode in ("forward", "forward+backward", "scan"):
        fns = {key: (lambda f=modes[mode], p=p: f(p, xj)) for key, (modes, p) in contenders.items()}
        if tm is not None and mode in tm:
            fns["torch"] = tm[mode]
        # The scan runs 5 steps per call: fewer calls, the same time.
        ms = interleaved(fns, max(3, repeats // 2) if mode == "scan" else repeats)
        for key, value in ms.items():
            out[key][mode] = value / SCAN_STEPS if mode == "scan" else value
    return out


def bench_layer(c_in: int, c_out: int, kernel: int, size: int, stride: int, repeats: int) -> dict:
    """One SAME layer (input `size`x`size`x`c_in`, batch 100) forward + backward with both
    gradients, `gemm` against `lax_hwio`: ms each and the ratio lax / gemm."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.random((BATCH, size, size, c_in), np.float32))
    k = jnp.asarray(rng.standard_normal((kernel, kernel, c_in, c_out)).astype(np.float32))

    def loss(layer):
        return lambda x, k: jnp.sum(jax.nn.relu(layer(x, k, 0.0, stride, "SAME")))

    fns = {
        "lax_hwio": jax.jit(jax.grad(loss(_lax_layer("HWIO")), (0, 1))),
        "gemm": jax.jit(jax.grad(loss(_gemm_layer), (0, 1))),
    }
    ms = interleaved(fns, repeats, x, k)
    out_size = -(-size // stride)
    return {
        "c_in": c_in,
        "c_out": c_out,
        "kernel": kernel,
        "size": size,
        "stride": stride,
        "lax_ms": ms["lax_hwio"],
        "gemm_ms": ms["gemm"],
        "lax_over_gemm": ms["lax_hwio"] / ms["gemm"],
        "prefer_gemm": prefer_gemm(c_in, c_out, (kernel, kernel), (out_size, out_size)),
    }


def sweep(quick: bool, repeats: int) -> list[dict]:
    if quick:
        shapes = [(1, 32, 5, 28), (32, 32, 5, 14), (64, 64, 3, 14)]
    else:
        shapes = [
            (c, c, k, s)
            for c in (8, 32, 64, 128)
            for k in (1, 3, 5)
            for s in (7, 14, 28)
            if not (c == 128 and s == 28)  # over a second a call on 2 cores
        ]
    rows = []
    for c_in, c_out, k, s in shapes:
        row = bench_layer(c_in, c_out, k, s, 1 if k == 1 else 2, repeats)
        rows.append(row)
        print(
            f"  {c_in:>3}->{c_out:<3} k{k} {s:>2}x{s:<2} s{row['stride']}: lax "
            f"{row['lax_ms']:7.2f} ms, gemm {row['gemm_ms']:7.2f} ms, lax/gemm "
            f"{row['lax_over_gemm']:.2f}, prefer_gemm {row['prefer_gemm']}",
            flush=True,
        )
    return rows


def markdown(stack: dict, rows: list[dict], loadavg: list[float]) -> str:
    lines = [
        f"Conv layers of the experiment CNN, batch {BATCH}, ms per call (median, interleaved; "
        f"load average at start {loadavg}: under load unless it is near 0)",
        "",
        "| implementation | forward | forward + backward | per step in a 5-step scan |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, modes in stack.items():
        cells = " | ".join(
            f"{modes[m]:.2f}" if m in modes else "n/a"
            for m in ("forward", "forward+backward", "scan")
        )
        lines.append(f"| {key} | {cells} |")
    if "gemm" in stack:
        g = stack["gemm"]
        lines += ["", "Ratios (other / gemm, above 1: gemm faster):", ""]
        for key, modes in stack.items():
            if key != "gemm":
                ratios = ", ".join(f"{m} {modes[m] / g[m]:.2f}" for m in modes)
                lines.append(f"- {key}: {ratios}")
    if rows:
        lines += [
            "",
            "Single layers, forward + backward with both gradients (ms; lax = HWIO):",
            "",
            "| in->out | kernel | input | stride | lax | gemm | lax / gemm | prefer_gemm |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r['c_in']}->{r['c_out']} | {r['kernel']} | {r['size']} | {r['stride']} "
                f"| {r['lax_ms']:.2f} | {r['gemm_ms']:.2f} | {r['lax_over_gemm']:.2f} "
                f"| {r['prefer_gemm']} |"
            )
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a small sweep")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per measurement")
    parser.add_argument("--no-sweep", action="store_true", help="the four-layer stack only")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    loadavg = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    stack = bench_stack(repeats)
    rows = [] if args.no_sweep else sweep(args.quick, repeats)
    text = markdown(stack, rows, loadavg)
    print(text)
    result = {"stack_ms": stack, "sweep": rows, "loadavg_start": loadavg, "repeats": repeats}
    if args.out:
        _write_atomic(Path(args.out), json.dumps(result, indent=2) + "\n")
        _write_atomic(Path(args.out).with_suffix(".md"), text)
    return result


if __name__ == "__main__":
    main()
