"""JAX's persistent compilation cache, in a folder under the zoo cache."""

import tempfile
import warnings
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from .._paths import zoo_home


def zoo_cache_dir() -> Path:
    """zoo's folder: `$ZOO_HOME`, else `$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`."""
    return zoo_home()


def enable_compilation_cache(directory: str | Path | None = None) -> Path | None:
    """Store compiled XLA programs on disk, so a second run skips most compilation.

    Every program is cached, however quick its compilation (a minimum compile time of 0 and
    no minimum size): on CPU most compilations are small, and they still add up to seconds
    before the first step. Call it before the first compilation; calling it later also works
    (the cache is reset so that the new folder takes effect), but what was compiled before is
    not stored.

    **Arguments:**

    - `directory`: the cache folder; default `<zoo cache>/jax`, where the zoo cache is
      `$ZOO_HOME`, `$XDG_CACHE_HOME/zoo` or `~/.cache/zoo`.

    **Returns:** the cache folder, or `None` if it cannot be created or written (a
    read-only `$ZOO_HOME`, say): then programs are compiled as without a cache, after one
    warning naming the folder, and nothing else changes.

    !!! warning

        JAX trusts its compilation cache: anyone who can write to the folder can run code
        in processes that use it. Keep it private.
    """
    path = Path(directory) if directory is not None else zoo_cache_dir() / "jax"
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A folder that exists but cannot take files fails here, not at every compilation.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        # A cache only saves time: training goes on without it.
        warnings.warn(
            f"compilation cache disabled: cannot write to {path} "
            f"({e.strerror or e}); set ZOO_HOME to a writable folder to cache compiled "
            "programs",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # JAX decides once per process whether the cache is in use, at the first compilation;
    # resetting makes a later call take effect too.
    compilation_cache.reset_cache()
    return path
