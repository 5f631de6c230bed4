"""The `ZOO_TYPECHECK=1` switch: runtime shape checking of every public call.

Installs jaxtyping's import hook with beartype for the `zoo` package, so it must run before any
checked submodule is imported (`zoo/__init__.py` calls it first thing).
"""

import os
import sys

_TRUE = {"1", "true", "yes", "on"}


def install_if_requested() -> bool:
    """Install the jaxtyping+beartype import hook for `zoo` when `ZOO_TYPECHECK` is truthy.

    **Returns:** whether checking is on for modules imported from now on.
    """
    if os.environ.get("ZOO_TYPECHECK", "").strip().lower() not in _TRUE:
        return False
    # Under pytest the jaxtyping plugin has already installed the hook; a second one would
    # wrap every function twice.
    if any(type(f).__name__ == "JaxtypingFinder" for f in sys.meta_path):
        return True
    from jaxtyping import install_import_hook

    install_import_hook("zoo", "beartype.beartype")
    return True
