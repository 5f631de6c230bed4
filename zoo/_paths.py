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
