# Does not import zoo at top level: jaxtyping's import hook (pyproject `addopts`) must see the
# package first so that every public call is shape-checked during the tests.
import random

import jax
import jax.random as jr
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_configure(config):
    # With `-n auto`, let idle xdist workers take queued tests from busy ones: the slowest
    # tests here take 20-50 s, and the default split can leave one worker with a long tail.
    if getattr(config.option, "dist", None) == "load":
        config.option.dist = "worksteal"


@pytest.fixture
def getkey():
    """A function returning fresh PRNG keys; the seed is printed so a failure can be replayed."""
    seed = random.randint(0, 2**31 - 1)
    print(f"getkey seed: {seed}")
    key = jr.PRNGKey(seed)

    def _getkey():
        nonlocal key
        key, sub = jr.split(key)
        return sub

    return _getkey
