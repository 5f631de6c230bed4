"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every file zoo writes that someone may read back (weights, cards, checkpoints, metrics,
configs, figures, downloads) goes through `atomic_open` or `atomic_write`: the bytes go to a
temporary file in the destination's folder (so the rename never crosses file systems), are
flushed and fsynced, then renamed over the destination, and the folder is fsynced so that
the rename itself survives a power cut. On any failure the temporary file is removed.
"""

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

# Temporary files are named `.NAME.*.part`: hidden, and recognisable as leftovers.
TEMP_SUFFIX = ".part"


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in `directory` durable; a no-op where folders cannot be synced."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "wb",
    *,
    permissions: int = 0o644,
    replace: Callable[[str, Path], Any] = os.replace,
) -> Iterator[IO[Any]]:
    """Open a temporary file to write `path` through; on a clean exit it replaces `path`.

    **Arguments:**

    - `path`: the destination; its folder must exist.
    - `mode`: `"wb"` or `"w"` (text, UTF-8).
    - `permissions`: the new file's mode (`mkstemp`'s 0o600 would hide published weights
      from other users).
    - `replace`: the call that renames the temporary file into place (tests stall it).

    **Raises:** `ValueError` for a mode other than `"wb"`/`"w"`; whatever the write raises,
    after removing the temporary file (the old `path`, if any, is left untouched).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: `mode` must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, permissions)
        encoding = None if mode == "wb" else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically (see `atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for writers that take a file name (matplotlib's
    `savefig`, `np.savez`); renamed over `path` on a clean exit, removed on failure.

    The temporary name keeps `path`'s suffix, since such writers choose a format by it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f"{TEMP_SUFFIX}{path.suffix}"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
