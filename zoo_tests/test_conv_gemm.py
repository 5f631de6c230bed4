"""The im2col convolution with its hand-written backward equals XLA's convolution.

Reference: `lax.conv_general_dilated` with channels-last dimension numbers and JAX's own
gradients of it. Tolerance (float32, standard-normal inputs): every entry within
`1e-5 * max|reference| + 1e-5 * |reference|`, float rounding of sums in another order.
"""

import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

SPATIAL = {1: "W", 2: "HW", 3: "DHW"}

# (input shape, kernel shape, strides, padding): 1-D, 2-D and 3-D, with and without batch
# axes, strides below, equal to and above the kernel, every padding form.
CASES = [
    ((3, 11, 2), (3, 2, 4), 1, "VALID"),
    ((3, 11, 2), (4, 2, 5), 3, "SAME"),
    ((3, 10, 2), (2, 2, 3), 3, "VALID"),  # stride > kernel: pixels no offset reads
    ((12, 3), (5, 3, 2), 2, 1),  # one example, no batch axis
    ((4, 28, 28, 1), (5, 5, 1, 8), 2, "SAME"),  # the experiment's first layer
    ((2, 14, 14, 6), (5, 5, 6, 4), 2, "SAME"),
    ((2, 9, 8, 3), (3, 2, 3, 4), (2, 1), ((1, 2), (0, 3))),
    ((2, 7, 7, 3), (3, 3, 3, 2), 1, "SAME"),
    ((2, 2, 8, 7, 3), (3, 3, 3, 2), 2, "SAME"),  # two batch axes
    ((9, 8, 3), (1, 1, 3, 5), 1, "VALID"),  # 1x1: a plain matmul
    ((2, 5, 6, 7, 2), (2, 3, 2, 2, 3), (1, 2, 2), 1),
]
VARIANTS = [("lax", "conv"), ("lax", "col2im"), ("gemm", "conv"), ("gemm", "col2im")]
# Every case with the default path, every path on a few cases (compilation is the cost).
PARAMS = [(*case, "lax", "conv") for case in CASES] + [
    (*CASES[i], *variant) for i in (1, 2, 5, 6, 10) for variant in VARIANTS[1:]
]


def _reference(x, kernel, strides, padding):
    """`lax.conv_general_dilated` on `(*batch, *spatial, C)` with an HWIO kernel."""
    from zoo.models._conv_gemm import _normalise

    strides_, pads = _normalise(x.shape, kernel.shape, strides, padding, "test")
    n = kernel.ndim - 2
    batch = x.shape[: x.ndim - n - 1]
    xb = x.reshape((-1,) + x.shape[-n - 1 :])
    s = SPATIAL[n]
    y = lax.conv_general_dilated(
        xb, kernel, strides_, pads, dimension_numbers=("N" + s + "C", s + "IO", "N" + s + "C")
    )
    return y.reshape(batch + y.shape[1:])


def _close(actual, expected):
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-5 * scale)


def _draw(getkey, x_shape, k_shape):
    x = jr.normal(getkey(), x_shape, jnp.float32)
    kernel = jr.normal(getkey(), k_shape, jnp.float32)
    return x, kernel


def _loss(conv, cotangent):
    # A cotangent that is not all ones, so that the gradients see every output differently.
    return lambda x, k: jnp.sum(conv(x, k) * cotangent)


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,forward,input_grad", PARAMS)
def test_matches_lax_conv(getkey, x_shape, k_shape, strides, padding, forward, input_grad):
    from zoo.models._conv_gemm import conv_gemm

    x, kernel = _draw(getkey, x_shape, k_shape)
    ours = jax.jit(
        lambda x, k: conv_gemm(x, k, strides, padding, forward=forward, input_grad=input_grad)
    )
    y = ours(x, kernel)
    ref = _reference(x, kernel, strides, padding)
    assert y.shape == ref.shape and y.dtype == jnp.float32
    _close(y, ref)
    cot = jr.normal(getkey(), ref.shape, jnp.float32)
    grads = jax.jit(jax.grad(_loss(ours, cot), (0, 1)))(x, kernel)
    ref_grads = jax.grad(_loss(lambda x, k: _reference(x, k, strides, padding), cot), (0, 1))(
        x, kernel
    )
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        _close(g, r)


@pytest.mark.parametrize("forward,input_grad", VARIANTS)
def test_under_vmap(getkey, forward, input_grad):
    from zoo.models._conv_gemm import conv_gemm

    # One example per call, batched by vmap, as zoo's models are called.
    x, kernel = _draw(getkey, (5, 14, 14, 3), (5, 5, 3, 4))

    def per_example(x, k):
        return conv_gemm(x, k, 2, "SAME", forward=forward, input_grad=input_grad)

    batched = jax.vmap(per_example, in_axes=(0, None))
    ref = _reference(x, kernel, 2, "SAME")
    _close(jax.jit(batched)(x, kernel), ref)
    cot = jr.normal(getkey(), ref.shape, jnp.float32)
    grads = jax.jit(jax.grad(_loss(batched, cot), (0, 1)))(x, kernel)
    ref_grads = jax.grad(_loss(lambda x, k: _reference(x, k, 2, "SAME"), cot), (0, 1))(x, kernel)
    for g, r in zip(grads, ref_grads):
        _close(g, r)


def test_inside_scan(getkey):
    from zoo.models._conv_gemm import conv_gemm

    # Three gradient steps in a `lax.scan` (where XLA's backward convolutions are slow):
    # the same weights as three steps with JAX's gradients of `lax.conv`.
    x, kernel = _draw(getkey, (4, 12, 12, 2), (3, 3, 2, 3))

    def train(conv):
        grad = jax.grad(lambda k: jnp.sum(jnp.tanh(conv(x, k))))

        def body(k, _):
            return k - 0.1 * grad(k), None

        return jax.jit(lambda k: lax.scan(body, k, None, length=3)[0])

    ours = train(lambda x, k: conv_gemm(x, k, 2, "SAME"))(kernel)
    ref = train(lambda x, k: _reference(x, k, 2, "SAME"))(kernel)
    _close(ours, ref)


def test_compiles_once(getkey):
    from zoo.models._conv_gemm import conv_gemm

    traces = []

    @jax.jit
    def step(x, k):
        traces.append(None)
        return jax.grad(lambda k: jnp.sum(conv_gemm(x, k, 2, "SAME")))(k)

    for _ in range(3):
        x, kernel = _draw(getkey, (2, 9, 9, 3), (3, 3, 3, 2))
        jax.block_until_ready(step(x, kernel))
    assert len(traces) == 1


def test_first_layer_needs_no_input_gradient(getkey):
    from zoo.models._conv_gemm import conv_gemm

    # Differentiating for the kernel only: XLA drops the input-gradient work (the model's
    # first layer), so the compiled step holds no convolution at all for the forward's
    # lax one aside.
    x, kernel = _draw(getkey, (2, 12, 12, 1), (5, 5, 1, 4))
    fn = jax.jit(jax.grad(lambda k: jnp.sum(jnp.tanh(conv_gemm(x, k, 2, "SAME")))))
    hlo = fn.lower(kernel).compile().as_text()
    assert hlo is not None and hlo.count("convolution(") == 1


def test_conv_picks_and_matches(getkey):
    from zoo.models._conv_gemm import conv, prefer_gemm

    x, kernel = _draw(getkey, (2, 10, 10, 3), (3, 3, 3, 4))
    ref = _reference(x, kernel, 1, "SAME")
    for in_scan in (False, True):
        _close(conv(x, kernel, 1, "SAME", in_scan=in_scan), ref)
    # The measured rule (benchmarks/conv.py): XLA's convolution outside a scan unless the
    # kernel is 1x1, the GEMM one inside a scan.
    assert prefer_gemm(3, 4, (3, 3), (10, 10), in_scan=True)
    assert not prefer_gemm(32, 32, (5, 5), (7, 7))
    assert prefer_gemm(32, 32, (1, 1), (14, 14))


@pytest.mark.parametrize(
    "x_shape,k_shape,kwargs,match",
    [
        ((2, 8, 8, 3), (3, 3, 4, 2), {}, "channels"),
        ((2, 8), (3, 3, 2, 2), {}, "spatial"),
        ((2, 8, 3), (3,), {}, "kernel"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"padding": "FULL"}, "padding"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"padding": -1}, "negative"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"padding": (1, 1, 1)}, "padding"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"strides": (1, 1, 1)}, "strides"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"strides": 0}, "strides"),
        ((2, 2, 8, 3), (3, 3, 3, 2), {}, "axis 0"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"forward": "fft"}, "forward"),
        ((2, 8, 8, 3), (3, 3, 3, 2), {"input_grad": "scatter"}, "input_grad"),
    ],
)
def test_bad_input(x_shape, k_shape, kwargs, match):
    from zoo.models._conv_gemm import conv_gemm

    x, kernel = jnp.zeros(x_shape), jnp.zeros(k_shape)
    # jaxtyping's checker (on in the tests) may catch a shape clash first, as a TypeError.
    with pytest.raises((ValueError, TypeError), match=match):
        conv_gemm(x, kernel, **kwargs)


def test_mixed_dtypes_rejected():
    from zoo.models._conv_gemm import conv_gemm

    with pytest.raises(TypeError, match="dtype"):
        conv_gemm(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 2, 2), jnp.bfloat16))
