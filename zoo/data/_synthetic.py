"""Synthetic data: an Ornstein-Uhlenbeck process (JAX) and linear-regression sets (NumPy)."""

from collections.abc import Sequence

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

# Python, NumPy or JAX scalars, traced ones included (so they can vary inside `jit`).
_RealScalarLike = Real[ArrayLike, ""]


def ou_process(
    key: PRNGKeyArray,
    batch: int,
    steps: int,
    *,
    x0: _RealScalarLike = 0.0,
    mu: _RealScalarLike = 1.0,
    tau: _RealScalarLike = 2.0,
    sigma: _RealScalarLike = 0.5,
    dt: _RealScalarLike = 0.1,
    noise_std: _RealScalarLike = 0.1,
) -> tuple[Float[Array, "batch steps"], Float[Array, "batch steps"]]:
    """Sample paths of an Ornstein-Uhlenbeck process and noisy observations of them.

    Euler-Maruyama: `x[t+1] = x[t] + dt * (mu - x[t]) / tau + sigma * sqrt(dt) * eps[t]` from
    `x[0] = x0`, with `eps` standard normal. Its stationary mean is `mu` and its stationary
    variance `sigma**2 * dt / (1 - (1 - dt / tau)**2)`, which tends to the continuous
    process's `sigma**2 * tau / 2` as `dt -> 0`. Pure JAX: jit it with `batch` and `steps`
    static; the float parameters may be traced.

    **Arguments:**

    - `key`: a PRNG key.
    - `batch`: the number of independent paths.
    - `steps`: the number of time points per path, `x[0]` included.
    - `x0`: the starting value.
    - `mu`: the mean the process reverts to.
    - `tau`: the reversion time scale.
    - `sigma`: the diffusion scale.
    - `dt`: the time step.
    - `noise_std`: the standard deviation of the Gaussian observation noise.

    **Returns:** `(clean, noisy)`, float32 arrays of shape `(batch, steps)`; `clean[:, 0] ==
    x0` and `noisy = clean + noise_std * normal`.

    **Raises:** `ValueError` when `batch` or `steps` is below 1.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    k_path, k_obs = jr.split(key)
    # float32 scalars: parameters may arrive as Python floats, NumPy float64 or traced arrays,
    # and strict dtype promotion must not see float32 mixed with anything wider.
    x0, mu, tau, sigma, dt, noise_std = (
        jnp.asarray(v, dtype=jnp.float32) for v in (x0, mu, tau, sigma, dt, noise_std)
    )
    eps = jr.normal(k_path, (steps - 1, batch), dtype=jnp.float32)
    diffusion = sigma * jnp.sqrt(dt)

    def step(x, e):
        x = x + dt * (mu - x) / tau + diffusion * e
        return x, x

    start = jnp.full((batch,), x0, dtype=jnp.float32)
    _, path = lax.scan(step, start, eps)
    clean = jnp.concatenate([start[None], path]).T
    noisy = clean + noise_std * jr.normal(k_obs, clean.shape, dtype=jnp.float32)
    return clean, noisy


def linear_regression(
    seed: int,
    n: int,
    coef: Sequence[float | int] | Real[np.ndarray, " features"] | float | int,
    intercept: float | int = 0.0,
    *,
    x_scale: float | int = 1.0,
    noise: str = "normal",
    noise_scale: float | int = 1.0,
) -> tuple[Float[np.ndarray, "n features"], Float[np.ndarray, " n"]]:
    """A linear-regression data set, `y = X @ coef + intercept + noise`, from a seed.

    `X` is uniform on `[0, x_scale)`. For example `linear_regression(0, 100, [3, 4], 5,
    x_scale=10, noise="uniform")` gives `y = 3 x1 + 4 x2 + 5 + U(0, 1)`, and
    `linear_regression(0, 100, 3, 2)` gives `y = 3 x + 2 + N(0, 1)`. NumPy, so it feeds
    `batches` directly; the same arguments give the same arrays.

    **Arguments:**

    - `seed`: a non-negative integer seeding NumPy's default generator.
    - `n`: the number of examples.
    - `coef`: one coefficient per feature (a scalar means one feature).
    - `intercept`: the constant term.
    - `x_scale`: the width of the features' uniform range.
    - `noise`: `"normal"` adds `N(0, noise_scale**2)`; `"uniform"` adds `U(0, noise_scale)`,
      which is not centred, so a least-squares fit finds `intercept + noise_scale / 2`.
    - `noise_scale`: the noise's standard deviation (normal) or width (uniform).

    **Returns:** `(X, y)`: float32 arrays of shapes `(n, features)` and `(n,)`.

    **Raises:** `ValueError` for a negative `n` or an unknown `noise`.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if noise not in ("normal", "uniform"):
        raise ValueError(f"noise must be 'normal' or 'uniform', got {noise!r}")
    coef_ = np.atleast_1d(np.asarray(coef, dtype=np.float64))
    if coef_.ndim != 1:
        raise ValueError(f"coef must be a scalar or a vector, got shape {coef_.shape}")
    rng = np.random.default_rng(seed)
    x = x_scale * rng.random((n, len(coef_)))
    if noise == "normal":
        eps = noise_scale * rng.standard_normal(n)
    else:
        eps = noise_scale * rng.random(n)
    y = x @ coef_ + intercept + eps
    return x.astype(np.float32), y.astype(np.float32)
