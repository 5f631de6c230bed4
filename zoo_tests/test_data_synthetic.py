"""zoo.data.ou_process and zoo.data.linear_regression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def test_ou_shapes_start_and_noise(getkey):
    import zoo.data

    clean, noisy = zoo.data.ou_process(getkey(), 64, 50, x0=-0.5, noise_std=0.2)
    assert clean.shape == noisy.shape == (64, 50)
    assert clean.dtype == noisy.dtype == jnp.float32
    np.testing.assert_array_equal(clean[:, 0], np.full(64, -0.5, np.float32))
    residual = np.asarray(noisy - clean)
    assert abs(residual.std() - 0.2) < 0.01  # 3200 samples: std error ~0.0025
    assert abs(residual.mean()) < 0.02


def test_ou_matches_recursion(getkey):
    """The scan is the Euler-Maruyama recursion; recover its increments and check them."""
    import zoo.data

    mu, tau, sigma, dt = 1.5, 3.0, 0.7, 0.05
    clean, _ = zoo.data.ou_process(getkey(), 4, 30, x0=0.2, mu=mu, tau=tau, sigma=sigma, dt=dt)
    x = np.asarray(clean, np.float64)
    eps = (x[:, 1:] - x[:, :-1] - dt * (mu - x[:, :-1]) / tau) / (sigma * np.sqrt(dt))
    # Standard normal increments: a deterministic drift error would show up in their mean.
    assert abs(eps.mean()) < 0.4 and 0.6 < eps.std() < 1.4
    # Without diffusion the path is the deterministic decay towards mu.
    clean0, _ = zoo.data.ou_process(getkey(), 2, 30, x0=0.2, mu=mu, tau=tau, sigma=0.0, dt=dt)
    expected = mu + (0.2 - mu) * (1 - dt / tau) ** np.arange(30)
    np.testing.assert_allclose(np.asarray(clean0[0]), expected, rtol=1e-5)


def test_ou_stationary_statistics(getkey):
    import zoo.data

    mu, tau, sigma, dt = 1.0, 2.0, 0.5, 0.1
    clean, _ = zoo.data.ou_process(getkey(), 1000, 1200, x0=mu, mu=mu, tau=tau, sigma=sigma, dt=dt)
    x = np.asarray(clean[:, 200:], np.float64)  # 10 reversion times of burn-in
    # The Euler scheme's exact stationary variance; sigma**2 * tau / 2 = 0.25 as dt -> 0.
    var = sigma**2 * dt / (1 - (1 - dt / tau) ** 2)
    assert abs(var - sigma**2 * tau / 2) < 0.03 * var
    # ~1e6 samples with a correlation time of tau / dt = 20 steps: ~2.5e4 independent ones,
    # so the mean's standard error is ~0.003 and the variance's ~1%.
    assert abs(x.mean() - mu) < 0.02
    assert abs(x.var() - var) < 0.06 * var
    # Not merely the right spread: the lag-20 autocorrelation is (1 - dt / tau) ** 20 ~ 0.36.
    d = x - x.mean()
    rho = (d[:, 20:] * d[:, :-20]).mean() / d.var()
    assert abs(rho - (1 - dt / tau) ** 20) < 0.05


def test_ou_jits_with_traced_parameters(getkey):
    import zoo.data

    traces = 0

    @jax.jit
    def sample(key, mu):
        nonlocal traces
        traces += 1
        return zoo.data.ou_process(key, 8, 16, mu=mu)[0]

    key = getkey()
    a = sample(key, jnp.float32(2.0))
    b = zoo.data.ou_process(key, 8, 16, mu=2.0)[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    sample(getkey(), jnp.float32(3.0))
    assert traces == 1  # a new mu or key does not retrace


def test_ou_bad_arguments(getkey):
    import zoo.data

    with pytest.raises(ValueError, match="steps must be at least 1"):
        zoo.data.ou_process(getkey(), 2, 0)
    with pytest.raises(ValueError, match="batch must be at least 1"):
        zoo.data.ou_process(getkey(), 0, 5)


def test_linear_regression_reproducible():
    import zoo.data

    a = zoo.data.linear_regression(3, 50, [3.0, 4.0], 5.0, x_scale=10.0, noise="uniform")
    b = zoo.data.linear_regression(3, 50, [3.0, 4.0], 5.0, x_scale=10.0, noise="uniform")
    c = zoo.data.linear_regression(4, 50, [3.0, 4.0], 5.0, x_scale=10.0, noise="uniform")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    x, y = a
    assert x.shape == (50, 2) and y.shape == (50,)
    assert x.dtype == y.dtype == np.float32
    assert x.min() >= 0 and x.max() < 10


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    return np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]


def test_linear_regression_uniform_noise_recipe():
    """y = 3 x1 + 4 x2 + 5 + U(0, 1): least squares finds the intercept plus the noise's mean."""
    import zoo.data

    x, y = zoo.data.linear_regression(0, 20_000, [3.0, 4.0], 5.0, x_scale=10.0, noise="uniform")
    residual = y - (x @ np.array([3.0, 4.0], np.float32) + 5.0)
    assert residual.min() >= -1e-4 and residual.max() <= 1 + 1e-4  # uniform on [0, 1)
    np.testing.assert_allclose(_fit(x, y), [3.0, 4.0, 5.5], atol=0.01)


def test_linear_regression_normal_noise_recipe():
    """y = 3 x + 2 + N(0, 1)."""
    import zoo.data

    x, y = zoo.data.linear_regression(1, 20_000, 3, 2)  # Python ints are fine too
    assert x.shape == (20_000, 1)
    residual = y - (3.0 * x[:, 0] + 2.0)
    assert abs(residual.std() - 1.0) < 0.03 and residual.min() < -2.5
    np.testing.assert_allclose(_fit(x, y), [3.0, 2.0], atol=0.1)


def test_linear_regression_bad_arguments():
    import zoo.data

    with pytest.raises(ValueError, match="noise must be"):
        zoo.data.linear_regression(0, 10, [1.0], noise="laplace")
    # With runtime type checking on (as in these tests) the annotation refuses it first.
    with pytest.raises((TypeError, ValueError), match="coef"):
        zoo.data.linear_regression(0, 10, [(1.0, 2.0)])  # pyright: ignore[reportArgumentType]
