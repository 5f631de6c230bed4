"""One writer per run folder: an exclusive `flock` on `<folder>/.lock` for a run's lifetime.

`flock` locks belong to the open file, so the kernel drops them when the holder exits,
however it exits (SIGKILL included): a lock is never left stale. The holder writes its PID
into the file, so that a second run can say who holds the folder. Within one process the
lock is re-entrant (a recipe holds its run folder while `fit` takes it again), and other
threads of the process wait for, or are refused, as another process would be.
"""

import contextlib
import errno
import fcntl
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderLockedError(RuntimeError):
    """Another training run (another process, or another thread) holds the run folder.

    **Attributes:** `folder` and `pid` (the holder's process id, `None` if unknown).
    """

    def __init__(self, folder: Path, pid: int | None):
        self.folder = folder
        self.pid = pid
        if pid is None:
            holder = "PID unknown"
        elif pid == os.getpid():
            holder = f"another thread of this process, PID {pid}"
        else:
            holder = f"PID {pid}"
        super().__init__(
            f"{folder} is in use by another training run ({holder}); wait for it to finish "
            "or stop it, or choose another run folder"
        )


class _Held:
    """This process's hold on one lock file: the open file and how often it is held."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.fd: int | None = None
        self.count = 0


_registry: dict[str, _Held] = {}
_registry_lock = threading.Lock()


def _holder_pid(fd: int) -> int | None:
    # The holder writes its PID just after locking: give it a moment (bounded) to do so.
    for _ in range(10):
        with contextlib.suppress(OSError, ValueError):
            return int(os.pread(fd, 32, 0).decode().strip())
        time.sleep(0.01)
    return None


@contextlib.contextmanager
def lock_run_folder(folder: str | Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of `folder` (created if missing) while the block runs.

    **Arguments:**

    - `folder`: the run (or checkpoint) folder.
    - `wait`: wait for the holder to let go, instead of failing at once.

    **Raises:** [`zoo.train.RunFolderLockedError`][] naming the holder's PID, when another
    process or thread holds it and `wait` is false. On a file system without locks (some
    network mounts) it warns and goes on unlocked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = os.path.realpath(path)
    with _registry_lock:
        held = _registry.setdefault(key, _Held())
    if not held.thread_lock.acquire(blocking=wait):
        raise RunFolderLockedError(folder, os.getpid())
    try:
        if held.count == 0:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                pid = _holder_pid(fd)
                os.close(fd)
                raise RunFolderLockedError(folder, pid) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                warnings.warn(
                    f"cannot lock {path} ({e.strerror}): this file system has no locks, so "
                    "nothing stops a second run from writing into the same folder",
                    stacklevel=3,
                )
            else:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            held.fd = fd
        held.count += 1
    except BaseException:
        held.thread_lock.release()
        raise
    try:
        yield
    finally:
        held.count -= 1
        if held.count == 0 and held.fd is not None:
            # Closing drops the flock. The file stays: removing it would let a third run
            # lock a new file while a second still waits on the old one.
            os.close(held.fd)
            held.fd = None
        held.thread_lock.release()
