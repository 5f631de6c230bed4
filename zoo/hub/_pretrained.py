"""The pretrained format: writing a weights folder atomically, and reading it back verified.

A weights folder holds:

- `config.json`: `{"format": 1, "architecture": <registered builder>, "config": {kwargs}}`,
  enough to rebuild the model's skeleton;
- `weights.eqx`: `eqx.tree_serialise_leaves((model, state))`, a sequence of `.npy` records;
- `card.json`: the [`zoo.ModelCard`][], which lists the SHA-256 and size of every other file
  (`card.files`) and repeats the config; a URL pins the SHA-256 of the card itself;
- `golden.npz` (optional): a few inputs `x` and the outputs `y` the model gave them, which a
  loaded model must reproduce.

Every load checks every file the card lists, and that the card's config is `config.json`'s.

Nothing is ever unpickled: `.npy` and `.npz` records are read with `allow_pickle=False`.
"""

import contextlib
import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._atomic import atomic_write
from .._version import DISTRIBUTION
from ..models import get_model_spec as get_spec, split_model_name as split_name
from ._card import ModelCard
from ._config import constructor_config
from ._errors import (
    ArchitectureMismatchError,
    GoldenMismatchError,
    TruncatedWeightsError,
    WeightsError,
    WeightsNotFoundError,
)
from ._integrity import check_pin, file_entry, read_file, sha256_hex, verify_bytes
from ._sources import CARD_FILE, CONFIG_FILE, GOLDEN_FILE, WEIGHTS_FILE

FORMAT_VERSION = 1

# `key=None` in `create_model` means this key, so that a model built twice is the same model.
DEFAULT_KEY_SEED = 0


def default_key() -> jax.Array:
    return jr.PRNGKey(DEFAULT_KEY_SEED)


# ----------------------------------------------------------------------------------------------
# Leaves: what the file should hold, and what it does hold.


@dataclasses.dataclass(frozen=True)
class _Leaf:
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype | None  # None: a Python scalar, whose dtype follows jax_enable_x64

    def describe(self) -> str:
        return f"shape {self.shape}" + ("" if self.dtype is None else f" dtype {self.dtype}")


def _state_markers(state: Any) -> tuple[str, ...]:
    # An `eqx.nn.State` is keyed by the stringified paths of its `StateIndex`es (e.g.
    # "ConvNet.norms[0].batch_counter"): far better in an error than a flat index.
    try:
        return tuple(str(k) for k in state.tree_flatten()[1])
    except (AttributeError, TypeError, ValueError):
        return ()


def _leaf_path(path: tuple, markers: tuple[str, ...]) -> str:
    # Paths start at the (model, state) pair.
    if getattr(path[0], "idx", 0) == 0:
        return "model" + jax.tree_util.keystr(path[1:])
    index = getattr(path[1], "key", None) if len(path) > 1 else None
    if isinstance(index, int) and index < len(markers):
        return f"state[{markers[index]}]" + jax.tree_util.keystr(path[2:])
    return "state" + jax.tree_util.keystr(path[1:])


def expected_leaves(tree: tuple[Any, Any]) -> list[_Leaf]:
    """The leaves `eqx.tree_serialise_leaves` writes for `(model, state)` (or its skeleton),
    in the order it writes them."""
    markers = _state_markers(tree[1])
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.ShapeDtypeStruct | jax.Array | np.ndarray):
            out.append(_Leaf(_leaf_path(path, markers), tuple(leaf.shape), np.dtype(leaf.dtype)))
        elif eqx.is_array_like(leaf):  # Python and NumPy scalars (e.g. `inference` flags)
            out.append(_Leaf(_leaf_path(path, markers), (), None))
    return out


def _check_records(data: bytes, expected: list[_Leaf], source: str) -> None:
    """Compare the `.npy` headers in `data` with the leaves the architecture expects, before
    anything is deserialised.

    **Raises:** `ArchitectureMismatchError` naming the first leaf that differs, both shapes
    (and dtypes), or a difference in the number of leaves.
    """
    f = io.BytesIO(data)
    for i, leaf in enumerate(expected):
        if f.tell() > len(data):
            raise TruncatedWeightsError(f"{source} ends in the middle of array {i - 1}")
        if f.tell() == len(data):
            raise ArchitectureMismatchError(
                f"{source} is for another architecture: it ends after {i} arrays, but the "
                f"architecture has {len(expected)}; the first missing one is {leaf.path} "
                f"({leaf.describe()})"
            )
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise WeightsError(f"{source}: record {i} ({leaf.path}) is not an array: {e}") from None
        if dtype.hasobject:
            raise WeightsError(f"{source}: record {i} holds Python objects, which zoo never loads")
        found = _Leaf(leaf.path, tuple(shape), None if leaf.dtype is None else dtype)
        if found.shape != leaf.shape or found.dtype != leaf.dtype:
            raise ArchitectureMismatchError(
                f"{source} is for another architecture: leaf {leaf.path} has "
                f"{found.describe()} in the file but {leaf.describe()} in the architecture"
            )
        f.seek(int(np.prod(shape)) * dtype.itemsize, io.SEEK_CUR)
    if f.tell() < len(data):
        raise ArchitectureMismatchError(
            f"{source} is for another architecture: it holds more arrays than the "
            f"{len(expected)} the architecture has"
        )
    if f.tell() > len(data):
        raise TruncatedWeightsError(f"{source} ends in the middle of its last array")


def _check_same_architecture(skeleton: Any, tree: Any, what: str) -> None:
    expected, actual = expected_leaves(skeleton), expected_leaves(tree)
    for want, got in zip(expected, actual):
        if want.path != got.path or want.shape != got.shape or want.dtype != got.dtype:
            raise ArchitectureMismatchError(
                f"{what} does not rebuild this model: leaf {got.path} has {got.describe()} "
                f"in the model but {want.path} has {want.describe()} in the rebuilt one"
            )
    if len(expected) != len(actual):
        raise ArchitectureMismatchError(
            f"{what} does not rebuild this model: it has {len(expected)} leaves, the model "
            f"{len(actual)}"
        )
    if jax.tree.structure(skeleton) != jax.tree.structure(tree):
        raise ArchitectureMismatchError(
            f"{what} does not rebuild this model: the arrays match but the structure or a "
            f"static field (an activation, a layer type) differs"
        )


# ----------------------------------------------------------------------------------------------
# Files.


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _from_json(value: Any) -> Any:
    # JSON has no tuples; the models' sequence arguments are tuples (their annotations say so).
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _to_json(value: Any, what: str) -> Any:
    """`value` as plain JSON values (NumPy scalars become Python numbers)."""
    try:
        return json.loads(json.dumps(value, default=_numpy_default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must hold JSON values only: {e}") from None


def _numpy_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray) or (isinstance(obj, jax.Array) and obj.ndim == 0):
        return np.asarray(obj).tolist()
    raise TypeError(f"{type(obj).__name__} is not a JSON value")


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {
        "jax": jax.__version__,
        "equinox": eqx.__version__,
        "zoo": version(DISTRIBUTION),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def is_stateful(state: eqx.nn.State | None) -> bool:
    """Whether `state` holds anything (BatchNorm statistics); stateless models have none."""
    return state is not None and bool(jax.tree.leaves(state))


@eqx.filter_jit
def apply_batch(model: Any, state: eqx.nn.State | None, x: Any) -> Any:
    """The outputs of a one-example `model` on a batch `x`, stateless or stateful."""
    if state is not None and is_stateful(state):
        return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)[
            0
        ]
    return jax.vmap(model)(x)


# ----------------------------------------------------------------------------------------------
# Saving.


def derived_config(spec: Any, model: Any) -> dict[str, Any]:
    """The model's constructor config (`constructor_config`) less what the builder of `spec`
    gives by default: the keyword arguments that rebuild `model` with `spec.builder`."""
    mine = _to_json(constructor_config(model), "the model's constructor config")
    default_model = eqx.filter_eval_shape(spec.builder, key=default_key())[0]
    if type(default_model) is not type(model):
        return mine
    default = _to_json(constructor_config(default_model), "the builder's default config")
    return {k: v for k, v in mine.items() if k not in default or default[k] != v}


def _state_or_empty(state: eqx.nn.State | None, like: eqx.nn.State, arch: str) -> eqx.nn.State:
    # zoo.train passes `None` for the state of a stateless model; on disk it is an empty State.
    if state is not None:
        return state
    if is_stateful(like):
        raise ValueError(f"{arch!r} is stateful (BatchNorm): pass its `state`, not None")
    return like  # an empty State: no leaves, so nothing of the skeleton remains in it


def save_pretrained(
    directory: str | os.PathLike,
    model: Any,
    state: eqx.nn.State | None,
    *,
    card: ModelCard,
    golden_input: Any = None,
) -> ModelCard:
    """Publish a trained model as a weights folder that `zoo.load_pretrained` and
    `zoo.create_model` can load.

    The config stored (the builder's keyword arguments) is read from the model itself (see
    [`zoo.hub.constructor_config`][]; only what differs from the builder's defaults is kept)
    unless `card.config` gives one. Either way it is first checked to rebuild `model` (the
    registered builder of `card.architecture` called with it gives the same leaves, shapes,
    dtypes and static fields), so that what is written can be read back, and every weight
    and state value is checked to be finite. Then writes `weights.eqx`, `golden.npz`,
    `config.json` and `card.json`, each to a temporary file that is fsynced and renamed into
    place; the card is written last, and it lists the size and SHA-256 of every other file
    (`card.files`), so a reader never accepts files from a half-finished save. Other files
    in `directory` are left alone. A URL of the folder pins the card's SHA-256
    ([`zoo.hub.card_sha256`][]).

    **Arguments:**

    - `directory`: the folder to write (created if needed). To make the weights loadable by
      name, use `zoo.hub.user_weights_dir() / card.name` (or, for weights shipped with zoo,
      `zoo.hub.bundled_weights_dir() / card.name`).
    - `model`, `state`: the trained model and its state (for a stateless model, its empty
      `eqx.nn.State` or `None`). They are stored as given; loading puts the model in
      inference mode.
    - `card`: the [`zoo.ModelCard`][]: `name` (`"arch.tag"`; `arch` any registered
      architecture, zoo's or yours), `dataset`, `metrics`, `command`, `recipe_config`,
      `preprocess`, `description`, and optionally `config` (default: read from the model).
    - `golden_input`: optional model-ready inputs with a leading batch axis (say 8
      preprocessed test images); their outputs, computed here in inference mode, are stored
      in `golden.npz` so that later loads can be checked with [`zoo.hub.check_golden`][].

    **Returns:** the completed card, as written (with `num_params`, `weights_sha256`,
    `weights_size`, `versions` and `date` filled in).

    **Raises:**

    - `UnsafeNameError` / `UnknownModelError`: `card.name` is invalid or its architecture
      is not registered.
    - `ArchitectureMismatchError`: the config does not rebuild `model`, naming the leaf.
    - `ValueError`: the card holds values that are not JSON, or a weight or state leaf
      holds NaN or infinity (naming the leaf).
    """
    arch, _ = split_name(card.name)
    spec = get_spec(arch)
    if card.config:
        config = _to_json(dict(card.config), "card.config")
        what = f"card.config {config} for {arch!r}"
    else:
        config = derived_config(spec, model)
        what = f"the config {config} read from the model (see zoo.hub.constructor_config)"
    card = dataclasses.replace(
        card,
        config=config,
        metrics=_to_json(dict(card.metrics), "card.metrics"),
        recipe_config=_to_json(dict(card.recipe_config), "card.recipe_config"),
    )
    # Rebuild from the JSON round trip of the config: exactly what a later load will do.
    try:
        skeleton = eqx.filter_eval_shape(spec.builder, key=default_key(), **_from_json(config))
    except (TypeError, ValueError) as e:
        raise ArchitectureMismatchError(
            f"{what} does not rebuild the model ({type(e).__name__}: {e}); pass the builder's "
            f"keyword arguments as `card.config`"
        ) from None
    state = _state_or_empty(state, skeleton[1], arch)
    _check_same_architecture(skeleton, (model, state), what)
    _check_finite((model, state))

    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, (model, state))
    weights = buffer.getvalue()
    golden = None
    if golden_input is not None:
        x = np.asarray(golden_input)
        y = np.asarray(apply_batch(eqx.nn.inference_mode(model), state, x))
        buffer = io.BytesIO()
        np.savez(buffer, x=x, y=y)
        golden = buffer.getvalue()

    config_bytes = _json_bytes({"format": FORMAT_VERSION, "architecture": arch, "config": config})
    files = {WEIGHTS_FILE: weights, CONFIG_FILE: config_bytes}
    if golden is not None:
        files[GOLDEN_FILE] = golden
    params = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    card = dataclasses.replace(
        card,
        num_params=int(sum(p.size for p in params)),
        weights_sha256=sha256_hex(weights),
        weights_size=len(weights),
        files={name: file_entry(data) for name, data in sorted(files.items())},
        versions=_versions(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write(directory / name, data)
    if golden is None:  # a golden pair left by an earlier save would no longer match
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / GOLDEN_FILE)
    atomic_write(directory / CARD_FILE, _json_bytes(card.to_json()))
    return card


def _check_finite(tree: tuple[Any, Any]) -> None:
    """**Raises:** `ValueError` naming the first floating-point leaf with a NaN or infinity."""
    markers = _state_markers(tree[1])
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not eqx.is_inexact_array(leaf):
            continue
        values = np.asarray(leaf)
        if not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise ValueError(
                f"save_pretrained: {_leaf_path(path, markers)} holds {bad} NaN or infinite "
                f"value(s) of {values.size}; the model diverged (lower the learning rate, or "
                f"check the data), so these weights are not published"
            )


# ----------------------------------------------------------------------------------------------
# Loading.


def _parse_json(data: bytes, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise WeightsError(f"{path} must hold a JSON object")
    return value


def _parse_config(data: bytes, path: Path) -> tuple[str, dict[str, Any]]:
    """`(architecture, config)` from the bytes of `config.json`, the config as JSON values."""
    value = _parse_json(data, path)
    if value.get("format") != FORMAT_VERSION:
        raise WeightsError(
            f"{path} has format {value.get('format')!r}; this version of zoo reads format "
            f"{FORMAT_VERSION}"
        )
    arch, config = value.get("architecture"), value.get("config")
    if not isinstance(arch, str) or not isinstance(config, dict):
        raise WeightsError(f"{path} needs 'architecture' (a string) and 'config' (an object)")
    try:
        split_name(arch)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    return arch, config


def read_card(directory: Path, pinned: str | None = None) -> ModelCard:
    """**Returns:** the card in `directory/card.json`, checked against the SHA-256 `pinned`
    (from a URL) when given.

    **Raises:** `WeightsNotFoundError` without a card, `ChecksumMismatchError` if it differs
    from the pin, `WeightsError` for a malformed card.
    """
    path = directory / CARD_FILE
    if not path.is_file() and not (directory / CONFIG_FILE).is_file():
        raise WeightsNotFoundError(f"{path} does not exist: not a weights folder")
    data = read_file(path)
    if pinned is not None:
        check_pin(data, pinned, str(path))
    return ModelCard.from_json(_parse_json(data, path), source=str(path))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


@dataclasses.dataclass(frozen=True)
class Verified:
    """A weights folder whose files were all checked against its card (and the card against
    a pin): what is loaded is what the card describes."""

    card: ModelCard
    arch: str
    config: dict[str, Any]  # config.json's, as JSON values (lists, not tuples)
    weights: bytes


def _verify_legacy_weights(data: bytes, card: ModelCard, path: Path) -> None:
    # Cards of zoo 0.1 list no `files`, only the weights' size and SHA-256.
    if card.weights_size is None or card.weights_sha256 is None:
        raise WeightsError(
            f"{path.parent / CARD_FILE} does not record the weights' size and SHA-256"
        )
    entry = {"size": card.weights_size, "sha256": card.weights_sha256}
    verify_bytes(data, entry, str(path), str(path.parent / CARD_FILE))


def open_folder(directory: Path, pinned: str | None = None) -> Verified:
    """Read a weights folder, verified: the card (against `pinned`, the SHA-256 of `card.json`
    a URL pins), every file the card lists (size and SHA-256), and that the card's
    architecture and config are `config.json`'s.

    A card written by zoo 0.1 lists no files: from a local folder its `weights.eqx` is
    checked by the card's `weights_sha256` and its config by the comparison with
    `config.json`; with a pin it is refused, since the pin would not cover the other files.

    **Raises:** `WeightsNotFoundError` for a missing file, `TruncatedWeightsError` and
    `ChecksumMismatchError` for a file that is not the one the card lists, `WeightsError`
    for a card and config that disagree or are malformed.
    """
    card = read_card(directory, pinned)
    card_path = directory / CARD_FILE
    data: dict[str, bytes] = {}
    if card.files:
        for name, entry in card.files.items():
            data[name] = read_file(directory / name)
            verify_bytes(data[name], entry, str(directory / name), str(card_path))
    elif pinned is not None:
        raise WeightsError(
            f"{card_path} lists no files with their SHA-256 (it was written by zoo 0.1), so the "
            f"URL's pin does not cover config.json and golden.npz; publish the folder again "
            f"with this zoo's save_pretrained"
        )
    else:
        data[WEIGHTS_FILE] = read_file(directory / WEIGHTS_FILE)
        _verify_legacy_weights(data[WEIGHTS_FILE], card, directory / WEIGHTS_FILE)
        data[CONFIG_FILE] = read_file(directory / CONFIG_FILE)
    arch, config = _parse_config(data[CONFIG_FILE], directory / CONFIG_FILE)
    if card.architecture != arch:
        raise WeightsError(
            f"{directory}: card.json names architecture {card.architecture!r} but "
            f"config.json names {arch!r}"
        )
    if _canonical(dict(card.config)) != _canonical(config):
        raise WeightsError(
            f"{directory}: card.json's config {_canonical(dict(card.config))} differs from "
            f"config.json's {_canonical(config)}; one of them was edited after saving, so "
            f"neither can be trusted: save the weights again"
        )
    return Verified(card, arch, config, data[WEIGHTS_FILE])


def read_config(directory: Path, pinned: str | None = None) -> tuple[str, dict[str, Any]]:
    """**Returns:** `(architecture, builder kwargs)` of a verified folder (see `open_folder`)."""
    verified = open_folder(directory, pinned)
    return verified.arch, _from_json(verified.config)


def _restore_weak_type(loaded: Any, like: Any) -> Any:
    # `.npy` records drop JAX's weak types, but a weakly typed scalar (BatchNorm's step
    # counter) must stay weak: it meets Python floats, which strict dtype promotion refuses
    # to combine with a strongly typed int32.
    if isinstance(like, jax.ShapeDtypeStruct) and like.weak_type and like.shape == ():
        weak = jnp.asarray(np.asarray(loaded).item())
        if weak.dtype == loaded.dtype:
            return weak
    return loaded


@dataclasses.dataclass(frozen=True)
class Loaded:
    model: Any
    state: eqx.nn.State
    card: ModelCard
    config: dict[str, Any]


def build_skeleton(spec: Any, config: Mapping[str, Any], what: str) -> Any:
    """`eqx.filter_eval_shape` of `spec`'s builder with `config`.

    **Raises:** `WeightsError` naming `what` when the builder refuses the config (an unknown
    argument, a value of the wrong type), instead of the builder's own traceback.
    """
    try:
        return eqx.filter_eval_shape(spec.builder, key=default_key(), **config)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise WeightsError(
            f"{what} does not build {spec.name!r}: {type(e).__name__}: {e}".split("\n")[0]
        ) from None


def load_folder(
    directory: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    pinned_card_sha256: str | None = None,
    arch: str | None = None,
) -> Loaded:
    """Load a weights folder: verify every file (`open_folder`), rebuild the skeleton with
    `eqx.filter_eval_shape` (no computation), compare the file's arrays' shapes and dtypes
    with the skeleton's, then deserialise. The model is in inference mode.

    **Arguments:**

    - `directory`: the weights folder.
    - `overrides`: builder kwargs replacing those in `config.json` (e.g. a dropout rate);
      the weights must still fit.
    - `pinned_card_sha256`: the SHA-256 `card.json` must have (from a URL).
    - `arch`: the architecture the caller asks for, if any.

    **Raises:** as `open_folder`; `ArchitectureMismatchError` if the weights are not for
    `arch` or do not fit the architecture; `WeightsError` if the config does not build it.
    """
    verified = open_folder(directory, pinned_card_sha256)
    # Before building anything: overrides meant for `arch` would confuse another builder.
    if arch is not None and verified.arch != arch:
        raise ArchitectureMismatchError(
            f"the weights in {directory} are for {verified.arch!r}, not {arch!r}"
        )
    config = {**_from_json(verified.config), **_from_json(dict(overrides or {}))}
    spec = get_spec(verified.arch)
    what = f"the config {_canonical(config)} of {directory / CONFIG_FILE}"
    if overrides:
        what += f" with the overrides {_canonical(dict(overrides))}"
    skeleton = build_skeleton(spec, config, what)
    path = directory / WEIGHTS_FILE
    data = verified.weights
    _check_records(data, expected_leaves(skeleton), str(path))
    model, state = jax.tree.map(
        _restore_weak_type, eqx.tree_deserialise_leaves(io.BytesIO(data), skeleton), skeleton
    )
    return Loaded(eqx.nn.inference_mode(model), state, verified.card, config)


def check_golden(
    directory: str | os.PathLike,
    model: Any,
    state: eqx.nn.State | None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> float:
    """Check that `model` reproduces the golden outputs stored in `directory/golden.npz`.

    **Arguments:**

    - `directory`: a weights folder saved with `golden_input`.
    - `model`, `state`: the loaded model (put in inference mode here) and its state
      (`None` for a stateless model).
    - `rtol`, `atol`: the tolerance, as `np.allclose`'s (XLA may fuse differently on
      another machine or version, so exact equality is not asked).

    **Returns:** the largest absolute difference.

    **Raises:** `WeightsNotFoundError` if there is no golden pair; `ChecksumMismatchError`
    if it is not the file the card lists; `GoldenMismatchError` with the largest difference
    if the outputs differ.
    """
    directory = Path(directory)
    path = directory / GOLDEN_FILE
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist: no golden pair was saved")
    data = read_file(path)
    if (directory / CARD_FILE).is_file():
        files = read_card(directory).files
        if GOLDEN_FILE in files:
            verify_bytes(data, files[GOLDEN_FILE], str(path), str(directory / CARD_FILE))
        elif files:
            raise WeightsError(
                f"{path} is not listed in {directory / CARD_FILE}: it was not saved with these "
                f"weights"
            )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (KeyError, ValueError, OSError) as e:
        raise WeightsError(f"{path} is not a valid golden pair: {e}") from None
    got = np.asarray(apply_batch(eqx.nn.inference_mode(model), state, x))
    if got.shape != y.shape or got.dtype != y.dtype:
        raise GoldenMismatchError(
            f"{path}: outputs of shape {got.shape} {got.dtype}, golden {y.shape} {y.dtype}"
        )
    err = float(np.max(np.abs(got.astype(np.float64) - y), initial=0.0))
    if not np.allclose(got, y, rtol=rtol, atol=atol):
        raise GoldenMismatchError(
            f"{path}: the model's outputs differ from the golden ones by up to {err:.3g} "
            f"(rtol={rtol}, atol={atol})"
        )
    return err
