"""Checkpoints: one file each, a checksummed JSON header and the leaves, written atomically.

File layout (version 2): the 8 bytes `ZOOCKPT2`, the header's length as an unsigned 64-bit
little-endian integer, the SHA-256 digest of the header (32 bytes), the UTF-8 JSON header,
then the payload: the array leaves as written by `eqx.tree_serialise_leaves` (one `.npy`
record per leaf, in `jax.tree_util` order). The header holds the format version, the step,
the data-iterator state, the run's config, a manifest of every leaf's path, shape and dtype
(so a checkpoint is checked against the model before any array is read), and the payload's
length and SHA-256 (`payload_bytes`, `payload_sha256`), verified before any array is read.
No pickle.

SHA-256 rather than a CRC: it is the digest zoo already uses for weights, and hashlib
streams it at 0.7 GiB/s on a loaded 2-core machine (zlib's CRC-32 at 1.1 GiB/s there), a
small cost next to writing and fsyncing the file, for a check no corruption slips past.

Version 1 files (`ZOOCKPT1`, no checksum, written before checksums were added) are still
restored, with a warning that they cannot be verified: refusing them would strand every run
saved by an older zoo, and they are no less safe than they were when written.
"""

import hashlib
import json
import os
import re
import struct
import time
import warnings
from pathlib import Path
from typing import IO, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from .._atomic import TEMP_SUFFIX, atomic_open
from ._lock import lock_run_folder
from ._state import TrainState

FORMAT = "zoo.train.checkpoint"
VERSION = 2
_MAGIC = b"ZOOCKPT2"
_MAGIC_V1 = b"ZOOCKPT1"  # no checksums: restored with a warning
_LENGTH = struct.Struct("<Q")
_DIGEST = 32  # bytes of a SHA-256 digest
_NAME = re.compile(r"^step_(\d+)\.ckpt$")
_CHUNK = 1 << 20
DAMAGED_SUFFIX = ".damaged"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose leaves do not match the train state it is restored into."""


class CheckpointCorruptError(ValueError):
    """A file that is not an intact zoo checkpoint: empty, truncated, not a checkpoint at
    all, or with a header or arrays that fail their SHA-256 check. Nothing was restored.

    **Attributes:** `path`, the file.
    """

    def __init__(self, path: Path, problem: str):
        self.path = path
        super().__init__(f"checkpoint {path} is damaged: {problem}")


def _is_key(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _unwrap_keys(tree: PyTree) -> PyTree:
    """Typed PRNG keys as their raw `uint32` data, which `.npy` can hold."""

    def unwrap(x):
        if not _is_key(x):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.eval_shape(jr.key_data, x)
        return jr.key_data(x)

    return jtu.tree_map(unwrap, tree)


def _rewrap_keys(loaded: PyTree, like: PyTree) -> PyTree:
    def rewrap(x, ref):
        if not _is_key(ref):
            return x
        if isinstance(ref, jax.Array):
            impl = jr.key_impl(ref)
        else:  # a ShapeDtypeStruct (`eqx.filter_eval_shape`): its dtype knows the PRNG impl
            impl = ref.dtype._impl  # pyright: ignore[reportAttributeAccessIssue]
        return jr.wrap_key_data(x, impl=impl)

    return jtu.tree_map(rewrap, loaded, like)


def _manifest(tree: PyTree) -> list[dict[str, Any]]:
    """Path, shape and dtype of every array leaf (typed keys already unwrapped)."""
    out = []
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct):
            out.append(
                {
                    "path": jtu.keystr(path),
                    "shape": list(leaf.shape),
                    "dtype": str(leaf.dtype),
                }
            )
    return out


def _describe(entry: dict[str, Any]) -> str:
    return f"{entry['dtype']}{list(entry['shape'])}"


def _check_manifest(saved: list[dict], wanted: list[dict], path: Path) -> None:
    for i, (s, w) in enumerate(zip(saved, wanted)):
        if s != w:
            if s["path"] != w["path"]:
                raise CheckpointMismatchError(
                    f"checkpoint {path} does not match the train state: leaf {i} is "
                    f"`{s['path']}` {_describe(s)} in the checkpoint but `{w['path']}` "
                    f"{_describe(w)} in the train state (another architecture?)"
                )
            raise CheckpointMismatchError(
                f"checkpoint {path} does not match the train state at leaf `{s['path']}`: "
                f"{_describe(s)} in the checkpoint, {_describe(w)} in the train state "
                "(another architecture or size?)"
            )
    if len(saved) != len(wanted):
        longer, where = (saved, "checkpoint") if len(saved) > len(wanted) else (wanted, "state")
        first = longer[min(len(saved), len(wanted))]
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match the train state: it has {len(saved)} array "
            f"leaves, the train state {len(wanted)}; the first unmatched one, in the {where}, "
            f"is `{first['path']}` {_describe(first)}"
        )


def _check_finite(host_state: TrainState) -> None:
    """Refuse to save a model whose parameters or state hold NaN or infinity."""
    for path, leaf in jtu.tree_flatten_with_path(host_state)[0]:
        if (
            getattr(path[0], "name", None) in ("model", "model_state")
            and isinstance(leaf, np.ndarray)
            and jnp.issubdtype(leaf.dtype, jnp.inexact)
            and not np.all(np.isfinite(leaf))
        ):
            raise ValueError(
                f"refusing to save non-finite values at step {int(host_state.step)}: "
                f"`{jtu.keystr(path)}` holds NaN or infinity"
            )


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """The file name of the checkpoint at `step` in `directory`."""
    return Path(directory) / f"step_{step:09d}.ckpt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The complete checkpoints in `directory`, oldest (lowest step) first.

    Temporary files left by an interrupted write are not checkpoints and are never listed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m is not None:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in `directory`, or `None` if there is none."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


# The one call that makes a new checkpoint visible. A module attribute so that tests can
# stall here and kill the process mid-write.
_replace = os.replace


class _HashingWriter:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += len(view)
        return self.f.write(view)


def _header_bytes(header: dict[str, Any]) -> bytes:
    try:
        return json.dumps(header).encode()
    except TypeError as e:
        raise TypeError(f"data_state and config must be JSON-serialisable: {e}") from None


def save_checkpoint(
    directory: str | Path,
    train_state: TrainState,
    *,
    data_state: Any = None,
    config: Any = None,
    keep: int | None = 3,
) -> Path:
    """Save `train_state` as `directory/step_<step>.ckpt`, atomically, keeping the last `keep`.

    The file is written to a temporary name in the same folder, flushed and fsynced, then
    renamed over the final name (and the folder fsynced), so a crash at any moment leaves
    either the old set of checkpoints or the new one, never a torn file. The header carries
    SHA-256 digests of itself and of the arrays, checked on restore. Saves into one folder
    take its lock (`<directory>/.lock`) in turn, so a writer only ever clears temporary
    files of writers that died.

    **Arguments:**

    - `directory`: the checkpoint folder; created if missing.
    - `train_state`: the [`zoo.train.TrainState`][] to save (model, model state, optimiser
      state, step, key).
    - `data_state`: JSON-serialisable state of the data pipeline (a Grain iterator's
      `get_state()`), returned by `restore_checkpoint` for resuming.
    - `config`: JSON-serialisable run configuration, stored in the header.
    - `keep`: how many of the newest checkpoints to keep; `None` keeps all.

    **Returns:** the path of the new checkpoint.

    **Raises:** `ValueError` if the model's parameters or state are not finite (so a
    diverged run never overwrites a good checkpoint), or if `keep` is below 1; `TypeError` if
    `data_state` or `config` is not JSON-serialisable.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (or None to keep all), got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree = jax.device_get(_unwrap_keys(train_state))
    _check_finite(tree)
    step = int(tree.step)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "time": time.time(),
        "data_state": data_state,
        "config": config,
        "leaves": _manifest(tree),
        # Placeholders at least as long as the final values, rewritten once the payload is
        # written (no file has 10**19 bytes).
        "payload_bytes": 10**19,
        "payload_sha256": "0" * 64,
    }
    _header_bytes(header)  # a config that is not JSON fails before anything is written
    final = checkpoint_path(directory, step)
    with lock_run_folder(directory, wait=True):
        # Every writer into this folder holds its lock while its temporary file exists, so
        # any temporary file found now belongs to a writer that was killed mid-write.
        for stale in directory.glob(f".step_*.ckpt.*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
        with atomic_open(final, "wb", replace=lambda src, dst: _replace(src, dst)) as f:
            _write(f, header, tree)
        if keep is not None:
            for old in list_checkpoints(directory)[:-keep]:
                if old != final:
                    old.unlink(missing_ok=True)
    return final


def _write(f: IO[bytes], header: dict[str, Any], tree: TrainState) -> None:
    """Header (with placeholders), payload through a hash, then the real header over the
    placeholders: the payload's digest is only known once it is written."""
    placeholder = _header_bytes(header)
    f.write(_MAGIC + _LENGTH.pack(len(placeholder)) + bytes(_DIGEST) + placeholder)
    payload = _HashingWriter(f)
    eqx.tree_serialise_leaves(
        payload,  # pyright: ignore[reportArgumentType]
        tree,
        filter_spec=lambda f, x: (
            eqx.default_serialise_filter_spec(f, x) if eqx.is_array(x) else None
        ),
    )
    header["payload_bytes"] = payload.size
    header["payload_sha256"] = payload.hash.hexdigest()
    final = _header_bytes(header)
    # Padded with spaces (JSON whitespace) to the placeholder's length, which is never less.
    final += b" " * (len(placeholder) - len(final))
    f.seek(len(_MAGIC) + _LENGTH.size)
    f.write(hashlib.sha256(final).digest() + final)
    f.seek(0, os.SEEK_END)


class _Opened:
    """A checkpoint file opened and its header read and checked."""

    def __init__(self, f: IO[bytes], path: Path):
        self.f = f
        self.path = path
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointCorruptError(path, "the file is empty")
        magic = f.read(len(_MAGIC))
        if magic not in (_MAGIC, _MAGIC_V1):
            raise CheckpointCorruptError(
                path, f"not a zoo checkpoint (it starts with {magic!r}, not {_MAGIC!r})"
            )
        self.checked = magic == _MAGIC
        raw = f.read(_LENGTH.size)
        if len(raw) < _LENGTH.size:
            raise CheckpointCorruptError(path, f"truncated to {size} bytes, inside its header")
        (length,) = _LENGTH.unpack(raw)
        digest = f.read(_DIGEST) if self.checked else b""
        room = size - f.tell()
        # Checked before reading: a damaged length must not allocate exabytes.
        if length > room:
            raise CheckpointCorruptError(
                path,
                f"its header claims {length} bytes but only {room} follow (truncated, or "
                "the length itself is damaged)",
            )
        data = f.read(length)
        if self.checked and hashlib.sha256(data).digest() != digest:
            raise CheckpointCorruptError(path, "its header fails its SHA-256 check")
        try:
            header = json.loads(data.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointCorruptError(path, f"its header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointCorruptError(path, "its header is not a JSON object")
        want = VERSION if self.checked else 1
        if header.get("format") != FORMAT or header.get("version") != want:
            raise ValueError(
                f"{path} has format {header.get('format')!r} version "
                f"{header.get('version')!r}; this zoo reads {FORMAT!r} versions 1 and "
                f"{VERSION}"
            )
        self.header = header
        self.start = f.tell()
        if self.checked and header.get("payload_bytes") != size - self.start:
            raise CheckpointCorruptError(
                path,
                f"its arrays should take {header.get('payload_bytes')} bytes but "
                f"{size - self.start} follow the header (truncated, or written over)",
            )

    def verify(self) -> None:
        """Check the payload's SHA-256 (version 2), or warn that it cannot be (version 1)."""
        if not self.checked:
            warnings.warn(
                f"checkpoint {self.path} has no checksum (written by an older zoo): "
                "restoring it unverified; the next checkpoint saved will have one",
                stacklevel=4,
            )
            return
        self.f.seek(self.start)
        h = hashlib.sha256()
        while chunk := self.f.read(_CHUNK):
            h.update(chunk)
        if h.hexdigest() != self.header.get("payload_sha256"):
            raise CheckpointCorruptError(
                self.path,
                "its arrays fail their SHA-256 check (a flipped bit or a partial write); "
                "nothing was restored from it",
            )
        self.f.seek(self.start)


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint file: step, data state, config, leaf manifest.

    **Raises:** [`zoo.train.CheckpointCorruptError`][] for a file that is not an intact
    checkpoint header (the arrays are not read, so not checked).
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _Opened(f, path).header


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint file's header and arrays against their SHA-256 digests.

    **Returns:** its header.

    **Raises:** [`zoo.train.CheckpointCorruptError`][] naming the file and what is wrong.
    """
    path = Path(path)
    with open(path, "rb") as f:
        opened = _Opened(f, path)
        opened.verify()
        return opened.header


def _load(path: Path, like: TrainState) -> tuple[TrainState, dict[str, Any]]:
    like_raw = _unwrap_keys(like)
    with open(path, "rb") as f:
        opened = _Opened(f, path)
        _check_manifest(opened.header["leaves"], _manifest(like_raw), path)
        opened.verify()
        try:
            loaded = eqx.tree_deserialise_leaves(
                f,
                like_raw,
                filter_spec=lambda f, x: (
                    eqx.default_deserialise_filter_spec(f, x)
                    if eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
                    else x
                ),
            )
        except (ValueError, EOFError, OSError) as e:  # only a version 1 file gets here torn
            raise CheckpointCorruptError(path, f"its arrays cannot be read ({e})") from None
    return _rewrap_keys(loaded, like), opened.header


def restore_latest(
    directory: Path, like: TrainState
) -> tuple[TrainState, dict[str, Any], Path, list[Path]]:
    """Restore the newest checkpoint in `directory` that verifies.

    **Returns:** `(train_state, header, path, skipped)`, `skipped` the newer files that were
    damaged (each named in a warning).

    **Raises:** `FileNotFoundError` without checkpoints; [`zoo.train.CheckpointCorruptError`][]
    if none verifies; `CheckpointMismatchError` if the newest intact one does not fit `like`.
    """
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"no checkpoint (step_*.ckpt) in {directory}")
    skipped, problems = [], []
    for path in reversed(found):
        try:
            state, header = _load(path, like)
        except CheckpointCorruptError as e:
            skipped.append(path)
            problems.append(str(e))
            continue
        for problem in problems:
            warnings.warn(
                f"{problem}; skipped it and restored {path.name}, the newest checkpoint "
                "that verifies",
                stacklevel=3,
            )
        return state, header, path, skipped
    raise CheckpointCorruptError(
        directory, f"none of its {len(found)} checkpoints verifies: " + "; ".join(problems)
    )


def restore_checkpoint(path: str | Path, like: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """Load a checkpoint into the structure of `like`, after checking it is intact.

    **Arguments:**

    - `path`: a checkpoint file, or a folder: its newest checkpoint that verifies is loaded,
      with a warning naming each newer one that is damaged.
    - `like`: a train state of the same structure, shapes and dtypes, e.g. a freshly
      initialised one (or one from `eqx.filter_eval_shape`); its non-array parts are kept.

    **Returns:** `(train_state, header)`: the loaded state and the checkpoint's header, whose
    `"data_state"` and `"config"` are what was saved.

    **Raises:**

    - `FileNotFoundError`: if `path` is missing or a folder without checkpoints.
    - [`zoo.train.CheckpointCorruptError`][]: if the file (or, for a folder, every
      checkpoint in it) is damaged: empty, truncated, not a checkpoint, or failing its
      SHA-256 check. The message names the file.
    - `CheckpointMismatchError`: if the checkpoint does not fit `like`; the message names the
      first leaf that differs, with both shapes and dtypes.
    - `ValueError`: if the file is a zoo checkpoint of an unsupported version.
    """
    path = Path(path)
    if path.is_dir():
        state, header, _, _ = restore_latest(path, like)
        return state, header
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return _load(path, like)
