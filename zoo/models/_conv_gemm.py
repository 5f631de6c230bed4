"""An N-d convolution as one matrix product (im2col), with a hand-written backward pass.

XLA:CPU runs a convolution fast only in the canonical layout (NHWC input, HWIO kernel) and
only outside a `while` loop: JAX's backward convolutions are never canonical, and inside a
`lax.scan` body the layout pass does not run at all, so the convolution falls back to a
naive loop (jax-ml/jax#12868, 5-9x slower measured here). `conv_gemm` writes the
convolution as strided slices, one concatenation and ONE `dot_general`; its `jax.custom_vjp`
backward is one more dot for the weight gradient and one dot plus a col2im of a few pads and
adds (one per kernel offset along each axis: 5 + 5 for a 5x5 kernel, not 25 scatters) for
the input gradient. Slices, pads and dots have no layout trouble, inside a scan or not.

Layouts: the input is channels-last, `(*batch, *spatial, in_channels)` with any number of
leading batch axes (none for one example under `vmap`); the kernel is `(*kernel_spatial,
in_channels, out_channels)` (HWIO, the canonical layout: `eqx.nn.Conv`'s OIHW weight is
`jnp.moveaxis(w, (0, 1), (-1, -2))`); the output is `(*batch, *out_spatial, out_channels)`.
The number of spatial axes is the kernel's rank minus 2 (1-D, 2-D, 3-D, ...).

`prefer_gemm` says for which layers it beats `lax.conv_general_dilated` on XLA:CPU (measured
by `benchmarks/conv.py`), and `conv` picks between the two.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.lax as lax
import jax.numpy as jnp

from .._typing import Array, Float

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def _normalise(
    x_shape: tuple[int, ...],
    k_shape: tuple[int, ...],
    strides: int | Sequence[int],
    padding: Padding,
    name: str,
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Per-axis strides and `(low, high)` paddings, with errors naming the bad argument."""
    n = len(k_shape) - 2
    if n < 1:
        raise ValueError(
            f"{name}: `kernel` must have shape (*kernel_spatial, in_channels, out_channels) "
            f"with at least one spatial axis, got shape {k_shape}"
        )
    if len(x_shape) < n + 1:
        raise ValueError(
            f"{name}: `x` must have shape (*batch, *spatial, in_channels) with {n} spatial "
            f"axes (the kernel's rank minus 2), got shape {x_shape}"
        )
    if x_shape[-1] != k_shape[-2]:
        raise ValueError(
            f"{name}: `x` has {x_shape[-1]} channels (its last axis) but `kernel` expects "
            f"{k_shape[-2]} (its second-to-last axis)"
        )
    if isinstance(strides, int):
        strides = (strides,) * n
    strides = tuple(strides)
    if len(strides) != n or not all(isinstance(s, int) and s >= 1 for s in strides):
        raise ValueError(f"{name}: `strides` must be {n} positive ints (or one), got {strides}")
    spatial, kernel = x_shape[-n - 1 : -1], k_shape[:n]
    if isinstance(padding, str):
        if padding == "VALID":
            pads = ((0, 0),) * n
        elif padding == "SAME":
            # XLA's SAME: ceil(size / stride) outputs, the odd pixel of padding at the end.
            pads = []
            for size, k, s in zip(spatial, kernel, strides):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads.append((total // 2, total - total // 2))
            pads = tuple(pads)
        else:
            raise ValueError(
                f"{name}: `padding` must be 'SAME', 'VALID', an int or (low, high) pairs, "
                f"got {padding!r}"
            )
    elif isinstance(padding, int):
        pads = ((padding, padding),) * n
    else:
        items = tuple(padding)
        if len(items) != n:
            raise ValueError(
                f"{name}: `padding` needs one entry per spatial axis ({n}), got {items}"
            )
        pads = tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in items)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"{name}: `padding` must not be negative, got {pads}")
    for axis, (size, k, (lo, hi)) in enumerate(zip(spatial, kernel, pads)):
        if size + lo + hi < k:
            raise ValueError(
                f"{name}: spatial axis {axis} of `x` has size {size} (padded {size + lo + hi}), "
                f"smaller than the kernel's {k}"
            )
    return strides, pads


def _out_sizes(padded: Sequence[int], kernel: Sequence[int], strides: Sequence[int]):
    return tuple((p - k) // s + 1 for p, k, s in zip(padded, kernel, strides))


def _patches(xp, kernel: tuple[int, ...], strides: tuple[int, ...], out: tuple[int, ...]):
    """`(*batch, *out, prod(kernel) * C)`: the input under each kernel offset (offsets in
    row-major order, channels fastest), matching the kernel reshaped `(-1, out_channels)`."""
    n = len(kernel)
    lead = xp.ndim - n - 1
    pieces = []
    for offset in _offsets(kernel):
        start = (0,) * lead + offset + (0,)
        limit = (
            xp.shape[:lead]
            + tuple(o + s * (m - 1) + 1 for o, s, m in zip(offset, strides, out))
            + xp.shape[-1:]
        )
        pieces.append(lax.slice(xp, start, limit, (1,) * lead + strides + (1,)))
    return pieces[0] if len(pieces) == 1 else lax.concatenate(pieces, xp.ndim - 1)


def _offsets(kernel: tuple[int, ...]):
    if not kernel:
        yield ()
        return
    for i in range(kernel[0]):
        for rest in _offsets(kernel[1:]):
            yield (i,) + rest


def _col2im(dpatches, kernel, strides, padded, channels):
    """The transpose of `_patches`: each patch entry's gradient added back where it was read.

    One spatial axis at a time, and per axis one stride phase at a time: the kernel offsets
    `o = stride * q + r` of phase `r` all land on the pixels `stride * m + r`, so on that
    phase's own (unstrided) grid they are `q`-shifted copies, placed by `lax.pad` and summed;
    the phases are then interleaved by one stack and reshape. A 5x5 kernel costs 5 + 5 pads
    and adds, which XLA fuses, instead of 25 scatters into the padded input. (Placing each
    offset with an interior-padded `lax.pad` instead was measured 7x slower.)"""
    n = len(kernel)
    lead = dpatches.ndim - n - 1
    out = dpatches.shape[lead : lead + n]
    # (*batch, *out, k_1, ..., k_n, C): the patch axis split into its kernel offsets.
    g = dpatches.reshape(dpatches.shape[:lead] + out + kernel + (channels,))
    zero = jnp.zeros((), g.dtype)
    for axis in range(n):
        # `g` is (*batch, padded_1..padded_{axis-1}, out_axis..out_n, k_axis..k_n, C).
        spatial_axis, k_axis = lead + axis, lead + n
        s, m, p, k = strides[axis], out[axis], padded[axis], kernel[axis]
        shifts = -(-k // s)  # offsets per phase, at most
        size = m + shifts - 1  # the phase grid those offsets reach
        phases = []
        for r in range(s):
            total = None
            for q in range(shifts):
                if s * q + r >= k:
                    break
                part = lax.index_in_dim(g, s * q + r, k_axis, keepdims=False)
                config = [(0, 0, 0)] * part.ndim
                config[spatial_axis] = (q, size - m - q, 0)
                placed = lax.pad(part, zero, config)
                total = placed if total is None else total + placed
            if total is None:  # a stride larger than the kernel: pixels no offset reads
                shape = list(lax.index_in_dim(g, 0, k_axis, keepdims=False).shape)
                shape[spatial_axis] = size
                total = jnp.zeros(shape, g.dtype)
            phases.append(total)
        # Interleave: pixel `s * m + r` is phase `r`'s `m`-th.
        g = jnp.stack(phases, spatial_axis + 1)
        g = g.reshape(g.shape[:spatial_axis] + (size * s,) + g.shape[spatial_axis + 2 :])
        g = _fit(g, spatial_axis, p)
    return g


def _fit(x, axis: int, size: int):
    """`x` cut or zero-padded at the end of `axis` to `size`."""
    if x.shape[axis] >= size:
        return lax.slice_in_dim(x, 0, size, axis=axis)
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (0, size - x.shape[axis], 0)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _input_grad_convs(g, kernel, strides, padded):
    """The gradient of the padded input as canonical (stride 1, NHWC/HWIO) convolutions,
    one per stride phase: pixel `stride * m + r` receives `sum_q g[m - q] kernel[stride * q
    + r]`, a full correlation of `g` with phase `r`'s flipped sub-kernel; the phases are then
    interleaved. XLA runs these fast in a scan body too, unlike JAX's own input gradient (a
    convolution with `lhs_dilation`, never canonical)."""
    n = kernel.ndim - 2
    lead = g.ndim - n - 1
    out = g.shape[lead : lead + n]
    sizes = tuple(-(-p // s) for p, s in zip(padded, strides))  # the phase grid
    results = {}
    for phase in _offsets(strides):
        sub = kernel[tuple(slice(r, None, s) for r, s in zip(phase, strides))]
        if 0 in sub.shape:  # a stride larger than the kernel: pixels no offset reads
            results[phase] = jnp.zeros(g.shape[:lead] + sizes + (kernel.shape[-2],), g.dtype)
            continue
        # Flipped in space, in/out swapped: the transpose of the phase's correlation.
        flipped = jnp.swapaxes(jnp.flip(sub, tuple(range(n))), -1, -2)
        q = sub.shape[:n]
        pads = tuple((k - 1, size - m) for k, size, m in zip(q, sizes, out))
        results[phase] = _lax_conv(g, flipped, (1,) * n, pads)
    if len(results) == 1:
        dxp = results[(0,) * n]
    else:
        # Interleave one axis at a time, last first: stack the phases after that axis.
        grid = results
        for axis in reversed(range(n)):
            merged = {}
            for key in {k[:axis] for k in grid}:
                parts = [grid[key + (r,)] for r in range(strides[axis])]
                st = jnp.stack(parts, lead + axis + 1)
                merged[key] = st.reshape(
                    st.shape[: lead + axis] + (-1,) + st.shape[lead + axis + 2 :]
                )
            grid = merged
        dxp = grid[()]
    for axis, p in enumerate(padded):
        dxp = _fit(dxp, lead + axis, p)
    return dxp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, kernel, strides, pads, forward, input_grad):
    return _forward(x, kernel, strides, pads, forward)


def _pad(x, pads):
    lead = x.ndim - len(pads) - 1
    config = [(0, 0, 0)] * lead + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _im2col(x, kernel_shape, strides, pads):
    n = len(kernel_shape)
    xp = _pad(x, pads)
    lead = xp.ndim - n - 1
    out = _out_sizes(xp.shape[lead : lead + n], kernel_shape, strides)
    return _patches(xp, kernel_shape, strides, out)


def _forward(x, kernel, strides, pads, forward):
    if forward == "lax":
        # XLA's own convolution in its canonical layout is fast in a scan body too: only
        # the backward convolutions are not (they are never canonical).
        return _lax_conv(x, kernel, strides, pads)
    cols = _im2col(x, kernel.shape[:-2], strides, pads)
    w = kernel.reshape(-1, kernel.shape[-1])
    return lax.dot_general(cols, w, (((cols.ndim - 1,), (0,)), ((), ())))


def _conv_fwd(x, kernel, strides, pads, forward, input_grad):
    # The input is kept, not its patches: rebuilding them in the backward pass costs one
    # more pass over memory but keeps prod(kernel) times less alive between the passes.
    return _forward(x, kernel, strides, pads, forward), (x, kernel)


def _weight_grad(x, g, kernel_shape, strides, pads):
    """One dot of the patches and the output gradient over every position."""
    cols = _im2col(x, kernel_shape[:-2], strides, pads)
    cols = cols.reshape(-1, cols.shape[-1])
    g = g.reshape(-1, g.shape[-1])
    # As `(g^T cols)^T`: XLA then reads the patches as they were written (a bitcast), where
    # `cols^T g` made it copy all of them into a transposed layout first.
    return jnp.dot(g.T, cols).T.reshape(kernel_shape)


def _conv_bwd(strides, pads, forward, input_grad, residuals, g):
    del forward
    x, kernel = residuals
    n = kernel.ndim - 2
    lead = x.ndim - n - 1
    c_in, c_out = kernel.shape[-2], kernel.shape[-1]
    dw = _weight_grad(x, g, kernel.shape, strides, pads)
    spatial = x.shape[lead:-1]
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(spatial, pads))
    if input_grad == "conv":
        dxp = _input_grad_convs(g, kernel, strides, padded)
    else:
        # The output gradient through the kernel (one dot), then back to the pixels.
        w = kernel.reshape(-1, c_out)
        dcols = lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
        dxp = _col2im(dcols, kernel.shape[:n], strides, padded, c_in)
    start = (0,) * lead + tuple(lo for lo, _ in pads) + (0,)
    limit = x.shape[:lead] + tuple(lo + s for (lo, _), s in zip(pads, spatial)) + (c_in,)
    return lax.slice(dxp, start, limit), dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_gemm(
    x: Float[Array, "*batch_and_spatial in_channels"],
    kernel: Float[Array, "*kernel_spatial in_channels out_channels"],
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    *,
    forward: str = "lax",
    input_grad: str = "conv",
) -> Float[Array, "*batch_and_out_spatial out_channels"]:
    """A convolution (cross-correlation, as `lax.conv_general_dilated`) whose backward pass
    is matrix products: im2col patches, one dot each for the weight and input gradients, and
    a col2im of a few pads and adds.

    **Arguments:**

    - `x`: channels-last input `(*batch, *spatial, in_channels)`; the batch axes (any number,
      none for one example under `vmap`) are kept.
    - `kernel`: `(*kernel_spatial, in_channels, out_channels)` (HWIO); its rank minus 2 is the
      number of spatial axes.
    - `strides`: one int, or one per spatial axis.
    - `padding`: `"SAME"` (XLA's: `ceil(size / stride)` outputs, the odd pixel at the end),
      `"VALID"`, one int for every side, or per spatial axis an int or a `(low, high)` pair.
    - `forward` (keyword): `"lax"` computes the forward pass with `lax.conv_general_dilated`
      in XLA's canonical layout (fast on XLA:CPU, in a `lax.scan` too; only its backward is
      slow), `"gemm"` as patches and one `dot_general` as well.
    - `input_grad` (keyword): `"conv"` computes the input gradient as one canonical
      stride-1 convolution per stride phase (4 for a 2-D stride 2), `"col2im"` as one dot
      of the output gradient and the kernel, then a col2im of pads and adds.

    **Returns:** `(*batch, *out_spatial, out_channels)`, equal to
    `lax.conv_general_dilated` with the matching dimension numbers to float rounding; its
    gradients (`jax.custom_vjp`) equal that convolution's too.

    **Raises:** `ValueError` naming the argument for mismatched channels, too few axes, bad
    strides or padding, or a padded input smaller than the kernel; `TypeError` for mixed
    dtypes.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if x.dtype != kernel.dtype:
        raise TypeError(
            f"conv_gemm: `x` ({x.dtype}) and `kernel` ({kernel.dtype}) must share a dtype; "
            "cast one of them"
        )
    if forward not in ("lax", "gemm"):
        raise ValueError(f"conv_gemm: `forward` must be 'lax' or 'gemm', got {forward!r}")
    if input_grad not in ("conv", "col2im"):
        raise ValueError(f"conv_gemm: `input_grad` must be 'conv' or 'col2im', got {input_grad!r}")
    strides_, pads = _normalise(x.shape, kernel.shape, strides, padding, "conv_gemm")
    return _conv(x, kernel, strides_, pads, forward, input_grad)


def _lax_conv(x, kernel, strides, pads):
    n = kernel.ndim - 2
    batch = x.shape[: x.ndim - n - 1]
    xb = x.reshape((math.prod(batch),) + x.shape[-n - 1 :])
    spatial = tuple(range(1, n + 1))
    # NHWC / HWIO / NHWC for any number of spatial axes.
    dims = lax.ConvDimensionNumbers(
        (0, n + 1) + spatial, (n + 1, n) + tuple(range(n)), (0, n + 1) + spatial
    )
    y = lax.conv_general_dilated(xb, kernel, strides, pads, dimension_numbers=dims)
    return y.reshape(batch + y.shape[1:])


def conv_lax(
    x: Float[Array, "*batch_and_spatial in_channels"],
    kernel: Float[Array, "*kernel_spatial in_channels out_channels"],
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
) -> Float[Array, "*batch_and_out_spatial out_channels"]:
    """The same convolution as `conv_gemm` (same layouts and arguments) through
    `lax.conv_general_dilated` alone, in XLA's canonical layout (NHWC input, HWIO kernel),
    with JAX's own gradients.

    Leading batch axes are flattened into one (a single example gets a batch axis of 1),
    since `lax.conv_general_dilated` takes exactly one.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    strides_, pads = _normalise(x.shape, kernel.shape, strides, padding, "conv_lax")
    return _lax_conv(x, kernel, strides_, pads)


def prefer_gemm(
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    out_spatial: Sequence[int],
    *,
    in_scan: bool = False,
) -> bool:
    """Whether `conv_gemm` beats `lax.conv_general_dilated` for a layer on XLA:CPU, training
    (forward and backward).

    **Arguments:**

    - `in_channels`, `out_channels`: the layer's channels.
    - `kernel_size`: the kernel's spatial sizes; `out_spatial`: the output's spatial sizes.
    - `in_scan`: whether the step runs inside a `lax.scan` (zoo's K steps per dispatch),
      where `lax.conv`'s backward falls back to a naive loop and the GEMM always wins.

    **Returns:** `True` where the GEMM convolution is the faster choice.
    """
    del in_channels, out_channels, out_spatial  # did not move the crossover measured
    if in_scan:
        # In a scan body XLA's backward convolutions run as naive loops: the experiment's
        # four layers took 359-482 ms a step with `lax.conv`, 29 ms with `conv_gemm`.
        return True
    # Outside a scan XLA's convolutions are fast and only the patches' extra passes over
    # memory are left: `conv_gemm` measured 0.5-0.9x `lax.conv` for every kernel larger
    # than 1x1 (3x3 and 5x5, 8-128 channels, 7x7-28x28 maps), 1.1-6x for 1x1 kernels.
    return math.prod(kernel_size) == 1


def conv(
    x: Float[Array, "*batch_and_spatial in_channels"],
    kernel: Float[Array, "*kernel_spatial in_channels out_channels"],
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    *,
    in_scan: bool = False,
) -> Float[Array, "*batch_and_out_spatial out_channels"]:
    """`conv_gemm` where `prefer_gemm` says it is faster, else `conv_lax`; same arguments.

    `in_scan` (keyword): whether the call runs inside a `lax.scan` body (see `prefer_gemm`).
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    strides_, pads = _normalise(x.shape, kernel.shape, strides, padding, "conv")
    n = kernel.ndim - 2
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[-n - 1 : -1], pads))
    out = _out_sizes(padded, kernel.shape[:n], strides_)
    use = prefer_gemm(kernel.shape[-2], kernel.shape[-1], kernel.shape[:n], out, in_scan=in_scan)
    return (conv_gemm if use else conv_lax)(x, kernel, strides_, pads)
