"""Where a ConvNet layer's training time goes on XLA:CPU: forward, input gradient and weight
gradient of each conv layer, timed apart, with XLA's own rules and the alternatives.

    python -m benchmarks.conv_parts              # about a minute
    python -m benchmarks.conv_parts --repeats 5  # quicker

Layers: the MNIST experiment CNN's four (`zoo.ConvNet()`: 5x5 and 3x3, stride 2) and the
strong preset's two (3x3, stride 1), batch 100, channels-last, SAME padding. For each:

- `forward`: `lax.conv_general_dilated` (NHWC/HWIO, XLA's canonical layout);
- `dx xla` / `dw xla`: JAX's own transposes of it (`jax.vjp` for one argument);
- `dx phase`: `zoo.models.conv_gemm`'s input gradient (one canonical stride-1 convolution
  per stride phase);
- `dw slices`: `conv_gemm`'s weight gradient (patches as strided slices and a concatenate,
  then one dot);
- `dw gather`: the patches as one gather instead, then the same dot.

Every function is jitted alone and the variants are interleaved round by round (medians),
so that a shared machine slows them alike; compare within one run.
"""

import time

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from zoo.models import conv_gemm

from ._cli import timing_main

BATCH = 100
# (name, input size, in channels, out channels, kernel, stride)
LAYERS = (
    ("experiment conv1", 28, 1, 32, 5, 2),
    ("experiment conv2", 14, 32, 32, 5, 2),
    ("experiment conv3", 7, 32, 10, 3, 2),
    ("experiment conv4", 4, 10, 10, 3, 2),
    ("strong conv1", 28, 1, 32, 3, 1),
    ("strong conv2", 14, 32, 64, 3, 1),
)
DIMS = ("NHWC", "HWIO", "NHWC")


def _gather_patches(xp, kernel: int, stride: int, out: int):
    """(N, out, out, kernel * kernel * C): one gather of pixel `stride * m + offset`."""
    pixel = (jnp.arange(out) * stride)[:, None] + jnp.arange(kernel)[None, :]
    rows, cols = pixel[:, None, :, None], pixel[None, :, None, :]
    patches = xp.at[:, rows, cols, :].get(mode="promise_in_bounds")
    return patches.reshape(xp.shape[0], out, out, -1)


def layer_functions(size: int, c_in: int, c_out: int, kernel: int, stride: int) -> dict:
    """The jitted parts of one layer, each `f(x, w, g)`."""
    pads = lax.padtype_to_pads((size, size), (kernel, kernel), (stride, stride), "SAME")
    strides = (stride, stride)
    out = -(-size // stride)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DIMS)

    def gemm(x, w):
        return conv_gemm(x, w, strides, pads)

    def dw_gather(x, w, g):
        del w
        xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        cols = _gather_patches(xp, kernel, stride, out).reshape(-1, kernel * kernel * c_in)
        dw = jnp.einsum("mo,mk->ko", g.reshape(-1, c_out), cols)
        return dw.reshape(kernel, kernel, c_in, c_out)

    parts = {
        "forward": lambda x, w, g: conv(x, w),
        "dx xla": lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
        "dx phase": lambda x, w, g: jax.vjp(lambda x: gemm(x, w), x)[1](g)[0],
        "dw xla": lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
        "dw slices": lambda x, w, g: jax.vjp(lambda w: gemm(x, w), w)[1](g)[0],
        "dw gather": dw_gather,
    }
    return {name: jax.jit(f) for name, f in parts.items()}


def measure(repeats: int) -> dict:
    """ms per call, per layer and part, and the largest difference of each gradient from
    XLA's (relative to its largest entry)."""
    rng = np.random.default_rng(0)
    results = {}
    for name, size, c_in, c_out, kernel, stride in LAYERS:
        out = -(-size // stride)
        x = jnp.asarray(rng.standard_normal((BATCH, size, size, c_in), np.float32))
        w = jnp.asarray(rng.standard_normal((kernel, kernel, c_in, c_out), np.float32))
        g = jnp.asarray(rng.standard_normal((BATCH, out, out, c_out), np.float32))
        fns = layer_functions(size, c_in, c_out, kernel, stride)
        values = {part: np.asarray(f(x, w, g)) for part, f in fns.items()}
        errors = {}
        for part, ref in (("dx phase", "dx xla"), ("dw slices", "dw xla"), ("dw gather", "dw xla")):
            scale = float(np.max(np.abs(values[ref])))
            errors[part] = float(np.max(np.abs(values[part] - values[ref]))) / scale
        times: dict[str, list[float]] = {part: [] for part in fns}
        for _ in range(repeats):
            for part, f in fns.items():
                t = time.perf_counter()
                jax.block_until_ready(f(x, w, g))
                times[part].append(time.perf_counter() - t)
        results[name] = {
            "ms": {part: 1e3 * float(np.median(v)) for part, v in times.items()},
            "relative_error": errors,
            "gflop": 2 * BATCH * out * out * kernel * kernel * c_in * c_out / 1e9,
        }
    return results


def markdown(results: dict, loadavg: list[float]) -> str:
    parts = list(next(iter(results.values()))["ms"])
    lines = [
        "Conv layers at batch 100, ms per call (median of interleaved rounds; load average "
        f"at start {loadavg}):",
        "",
        "| layer | GFLOP each | " + " | ".join(parts) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in parts) + " |",
    ]
    for name, r in results.items():
        cells = " | ".join(f"{r['ms'][p]:.2f}" for p in parts)
        lines.append(f"| {name} | {r['gflop']:.3f} | {cells} |")
    worst = max(e for r in results.values() for e in r["relative_error"].values())
    lines += ["", f"Every alternative gradient equals XLA's to {worst:.1e} (relative)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    return timing_main(__doc__, measure, markdown, 9, argv)


if __name__ == "__main__":
    main()
