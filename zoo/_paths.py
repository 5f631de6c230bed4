"""The one folder zoo keeps its files in, so that one variable moves all of it."""

import os
from pathlib import Path


def zoo_home() -> Path:
    """zoo's folder: `$ZOO_HOME`, else `$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`.

    It holds `datasets/` (unless `$ZOO_DATA` points elsewhere), `weights/` (weights your own
    runs publish), `downloads/` (weights fetched from URLs) and `jax/` (the persistent
    compilation cache). Read on every call, so it follows the environment.
    """
    if home := os.environ.get("ZOO_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "zoo"


_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    """Whether `$ZOO_OFFLINE` (1, true, yes or on) forbids every network download: weights
    and datasets alike. Read on every call, so it follows the environment."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in _TRUE
