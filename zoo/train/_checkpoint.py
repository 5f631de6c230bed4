"""Checkpoints: one file each, a JSON header and the leaves, written atomically.

File layout: the 8 bytes `ZOOCKPT1`, the header's length as an unsigned 64-bit little-endian
integer, the UTF-8 JSON header, then the array leaves as written by `eqx.tree_serialise_leaves`
(one `.npy` record per leaf, in `jax.tree_util` order). The header holds the format version,
the step, the data-iterator state, the run's config and a manifest of every leaf's path, shape
and dtype, so a checkpoint is checked against the model before any array is read. No pickle.
"""

import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from ._state import TrainState

FORMAT = "zoo.train.checkpoint"
VERSION = 1
_MAGIC = b"ZOOCKPT1"
_LENGTH = struct.Struct("<Q")
_NAME = re.compile(r"^step_(\d+)\.ckpt$")
_TMP_SUFFIX = ".tmp"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose leaves do not match the train state it is restored into."""


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


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The one call that makes a new checkpoint visible. A module attribute so that tests can
# stall here and kill the process mid-write.
_replace = os.replace


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
    either the old set of checkpoints or the new one, never a torn file.

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
    }
    try:
        header_bytes = json.dumps(header).encode()
    except TypeError as e:
        raise TypeError(f"data_state and config must be JSON-serialisable: {e}") from None

    # Temporary files of writers that were killed mid-write are dead weight; only one writer
    # per folder is supported, so any we find are stale.
    for stale in directory.glob(f".step_*{_TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)

    final = checkpoint_path(directory, step)
    tmp = directory / f".{final.name}.{os.getpid()}{_TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(_LENGTH.pack(len(header_bytes)))
            f.write(header_bytes)
            eqx.tree_serialise_leaves(
                f,
                tree,
                filter_spec=lambda f, x: (
                    eqx.default_serialise_filter_spec(f, x) if eqx.is_array(x) else None
                ),
            )
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)

    if keep is not None:
        for old in list_checkpoints(directory)[:-keep]:
            if old != final:
                old.unlink(missing_ok=True)
    return final


def _read_header(f, path: Path) -> dict[str, Any]:
    magic = f.read(len(_MAGIC))
    if magic != _MAGIC:
        raise ValueError(f"{path} is not a zoo checkpoint (bad magic bytes {magic!r})")
    (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
    header = json.loads(f.read(length).decode())
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(
            f"{path} has format {header.get('format')!r} version {header.get('version')!r}; "
            f"this zoo reads {FORMAT!r} version {VERSION}"
        )
    return header


def read_checkpoint_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint file: step, data state, config, leaf manifest."""
    path = Path(path)
    with open(path, "rb") as f:
        return _read_header(f, path)


def restore_checkpoint(path: str | Path, like: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """Load a checkpoint into the structure of `like`.

    **Arguments:**

    - `path`: a checkpoint file, or a folder (its latest checkpoint is loaded).
    - `like`: a train state of the same structure, shapes and dtypes, e.g. a freshly
      initialised one (or one from `eqx.filter_eval_shape`); its non-array parts are kept.

    **Returns:** `(train_state, header)`: the loaded state and the checkpoint's header, whose
    `"data_state"` and `"config"` are what was saved.

    **Raises:**

    - `FileNotFoundError`: if `path` is missing or a folder without checkpoints.
    - `CheckpointMismatchError`: if the checkpoint does not fit `like`; the message names the
      first leaf that differs, with both shapes and dtypes.
    - `ValueError`: if the file is not a zoo checkpoint of a supported version.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (step_*.ckpt) in {path}")
        path = found
    elif not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    like_raw = _unwrap_keys(like)
    with open(path, "rb") as f:
        header = _read_header(f, path)
        _check_manifest(header["leaves"], _manifest(like_raw), path)
        loaded = eqx.tree_deserialise_leaves(
            f,
            like_raw,
            filter_spec=lambda f, x: (
                eqx.default_deserialise_filter_spec(f, x)
                if eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
                else x
            ),
        )
    return _rewrap_keys(loaded, like), header
