"""The user-facing calls: `create_model`, `load_pretrained`, `model_card`, `list_models`."""

import fnmatch
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import equinox as eqx
import jax

from ..models import (
    ModelSpec,
    get_model_spec,
    registered_architectures,
    split_model_name as split_name,
)
from ._card import ModelCard
from ._download import discard_cached, fetch_folder, is_url
from ._errors import (
    ArchitectureMismatchError,
    ChecksumMismatchError,
    HeadReinitialisedWarning,
    TruncatedWeightsError,
    WeightsError,
    WeightsNotFoundError,
)
from ._pretrained import (
    Loaded,
    default_key,
    expected_leaves,
    load_folder,
    read_card,
    read_config,
)
from ._sources import available_weights, find_weights

Source = str | os.PathLike
T = TypeVar("T")

# What a cached download that no longer matches its pin raises: the folder is damaged (a
# full disk, an edit, a bit flip), not the published weights, so it is fetched again.
_DAMAGE = (ChecksumMismatchError, TruncatedWeightsError, WeightsNotFoundError)


def as_folder(source: Source) -> Path | None:
    """The folder `source` names, or `None` when it is a model name or a URL.

    An `os.PathLike` is always a folder; a `str` is one when it names an existing directory
    (`~` expanded). Any other `str` is a name (`"arch.tag"`) or, with `://`, a URL, so a
    mistyped path is refused as an invalid name rather than searched for.
    """
    if isinstance(source, os.PathLike):
        return Path(source)
    if not isinstance(source, str) or not source or is_url(source):
        return None
    path = Path(source).expanduser()
    return path if path.is_dir() else None


def _locate(source: Source) -> tuple[Path, str | None, bool]:
    """The local folder of `source` (downloaded first for a URL), the SHA-256 of `card.json`
    a URL pins, and whether the folder was downloaded just now."""
    folder = as_folder(source)
    if folder is not None:
        return folder, None, False
    assert isinstance(source, str)
    if not is_url(source):
        name_arch, tag = split_name(source)
        try:
            location = find_weights(get_model_spec(name_arch), tag)[1]
        except WeightsNotFoundError:
            # A weight set published in torch's formats: downloaded, verified and converted
            # once into `$ZOO_HOME/weights`, where the next call finds it.
            from ._torch_sources import TORCH_SOURCES, fetch_torch_weights

            if source not in TORCH_SOURCES:
                raise
            return fetch_torch_weights(source), None, False
        if isinstance(location, Path):
            return location, None, False
        source = location
    return fetch_folder(source)


def _from_source(source: Source, use: Callable[[Path, str | None], T]) -> T:
    """`use(folder, pin)` on the folder of `source`; a cached download that fails
    verification is removed (with a `DamagedCacheWarning`) and fetched once more."""
    folder, pinned, fresh = _locate(source)
    try:
        return use(folder, pinned)
    except _DAMAGE as e:
        if pinned is None or fresh:
            raise
        discard_cached(folder, str(e))
    folder, pinned, _ = _locate(source)
    return use(folder, pinned)


def _load_source(
    source: Source, *, arch: str | None = None, overrides: dict[str, Any] | None = None
) -> Loaded:
    """Load from a folder (a path), a URL (`str` with `://`) or a name (`str`)."""

    def load(folder: Path, pinned: str | None) -> Loaded:
        return load_folder(folder, overrides=overrides, pinned_card_sha256=pinned, arch=arch)

    return _from_source(source, load)


def load_pretrained(source: Source) -> tuple[Any, eqx.nn.State]:
    """Load pretrained weights, verified, into their architecture.

    Every file the card lists (`weights.eqx`, `config.json`, `golden.npz`) is checked
    against its size and SHA-256, the card against a URL's pin, and the card's config against
    `config.json`; the skeleton is rebuilt from `config.json` with `eqx.filter_eval_shape`
    (nothing is computed), and each array's shape and dtype checked against the skeleton's,
    before anything is deserialised.

    **Arguments:**

    - `source`: one of
        - a name, `"arch.tag"`, or `"arch"` for its default weights, looked up in the
          bundled weights and then in `$ZOO_HOME/weights` (see [`zoo.hub.zoo_home`][]);
        - a folder, as a `pathlib.Path` or a `str` naming an existing folder (a `str`
          that is neither is a name or, with `://`, a URL);
        - a URL of a published folder pinned by the SHA-256 of its `card.json` (which
          lists the SHA-256 of every other file; [`zoo.hub.card_sha256`][]):
          `"https://host/path/mlp_mnist.fashion/#sha256=<64 hex digits>"` (also
          `http://` and `file://`), downloaded once into `$ZOO_HOME/downloads/<sha256>/`
          and verified again on every load.

    **Returns:** `(model, state)`, the model in inference mode (`eqx.nn.inference_mode`;
    `eqx.nn.inference_mode(model, False)` switches back to training).

    **Raises:** `UnsafeNameError`, `UnknownModelError`, `WeightsNotFoundError`,
    `ChecksumMismatchError`, `TruncatedWeightsError`, `ArchitectureMismatchError` (naming the
    first leaf that differs and both shapes), `WeightsError` (a malformed or inconsistent
    card or config), `OfflineError`, `DownloadError` (`DownloadLimitError`: a file larger
    than its card states, or slower than `$ZOO_DOWNLOAD_DEADLINE`). A damaged folder of the
    download cache is removed, with a `DamagedCacheWarning`, and fetched again.
    """
    loaded = _load_source(source)
    return loaded.model, loaded.state


def model_card(source: Source) -> ModelCard:
    """The card of a set of weights: `source` as in [`zoo.load_pretrained`][].

    Only the card is read, and checked against a URL's pin (the other files are verified
    when they are loaded); a URL is downloaded into the cache first, where every file was
    checked.

    **Raises:** as [`zoo.load_pretrained`][]; `WeightsError` for a malformed card.
    """
    return _from_source(source, lambda folder, pinned: read_card(folder, pinned))


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Names matching a shell-style `pattern` (`"mlp*"`, `"*.fashion"`), sorted.

    **Arguments:**

    - `pattern`: matched with `fnmatch` against the whole name.
    - `pretrained`: `False` lists the registered architectures; `True` lists every
      `arch.tag` with weights on disk (bundled, then `$ZOO_HOME/weights`).

    **Returns:** the sorted names.
    """
    names = available_weights() if pretrained else registered_architectures()
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def _resolve(
    spec: ModelSpec, tag: str | None, pretrained: bool | str | os.PathLike
) -> Source | None:
    """What to load for `create_model`, or `None` for a fresh model."""
    if isinstance(pretrained, os.PathLike):
        return pretrained
    if isinstance(pretrained, str):
        if is_url(pretrained) or as_folder(pretrained) is not None:
            return pretrained
        if tag is not None and pretrained != tag:
            raise ValueError(
                f"the name {spec.name}.{tag} and pretrained={pretrained!r} ask for two "
                f"different weights"
            )
        return f"{spec.name}.{pretrained}"
    if pretrained:
        return spec.name if tag is None else f"{spec.name}.{tag}"
    return None


def _shapes(tree: Any) -> list[tuple]:
    return [(leaf.path, leaf.shape, leaf.dtype) for leaf in expected_leaves(tree)]


def _replace_head(
    spec: ModelSpec,
    loaded: Loaded,
    num_classes: int,
    key: jax.Array,
    strict: bool,
    name: str,
) -> tuple[Any, eqx.nn.State]:
    """The loaded model with a fresh head for `num_classes`, or itself if it has as many."""
    config = {**loaded.config, "num_classes": num_classes}
    target = eqx.filter_eval_shape(spec.builder, key=key, **config)
    if _shapes(target) == _shapes((loaded.model, loaded.state)):
        return loaded.model, loaded.state
    if spec.head is None:
        raise ValueError(f"{spec.name!r} has no classifier head, so `num_classes` cannot change")
    if strict:
        raise ArchitectureMismatchError(
            f"{name} was trained with another number of classes than num_classes={num_classes} "
            f"(strict=True forbids re-initialising the head)"
        )
    warnings.warn(
        f"{name}: the classifier head is re-initialised at random for num_classes="
        f"{num_classes}; every other layer keeps its pretrained weights",
        HeadReinitialisedWarning,
        stacklevel=3,
    )
    fresh, _ = spec.builder(key=key, **config)
    model = eqx.tree_at(spec.head, loaded.model, eqx.nn.inference_mode(spec.head(fresh)))
    # The builder must change nothing but the head; anything else would silently mix weights.
    if _shapes((model, loaded.state)) != _shapes(target):
        raise WeightsError(
            f"{spec.name!r}: `num_classes` changes more than the part its `head` selects"
        )
    return model, loaded.state


def create_model(
    name: str,
    *,
    pretrained: bool | str | os.PathLike = False,
    key: jax.Array | None = None,
    num_classes: int | None = None,
    strict: bool = False,
    **overrides: Any,
) -> tuple[Any, eqx.nn.State]:
    """Build a registered model, freshly initialised or with pretrained weights.

    **Arguments:**

    - `name`: `"arch"` or `"arch.tag"` (see [`zoo.list_models`][]). With
      `pretrained=False`, a tag selects only the architecture config its weights were
      trained with.
    - `pretrained`: `False` (fresh weights), `True` (the weights of the tag in `name`, or the
      architecture's default weights), a tag (`"fashion"`), a folder (a `pathlib.Path`), or a
      URL pinned with `#sha256=` (see [`zoo.load_pretrained`][]).
    - `key`: initialises fresh weights and a re-initialised head; `None` means
      `jax.random.PRNGKey(0)`, so the same call always gives the same model.
    - `num_classes`: the number of classes, for classifiers; with pretrained weights trained
      for another number, the head is re-initialised from `key` (with a
      `HeadReinitialisedWarning`) and every other weight is kept.
    - `strict`: make a head re-initialisation an error instead.
    - `**overrides`: builder keyword arguments (e.g. `width=256`, `dropout=0.1`); with
      pretrained weights they replace the saved config, and the weights must still fit.

    **Returns:** `(model, state)`: `state` is an `eqx.nn.State`, empty for stateless models.
    Pretrained models come back in inference mode; `eqx.nn.inference_mode(model, False)`
    switches to training.

    **Raises:** `UnsafeNameError`, `UnknownModelError`, `WeightsNotFoundError`,
    `ArchitectureMismatchError` (weights that do not fit; or, with `strict=True`, another
    number of classes), and the errors of [`zoo.load_pretrained`][].
    """
    arch, tag = split_name(name)
    spec = get_model_spec(arch)
    if num_classes is not None and spec.head is None:
        raise ValueError(
            f"{arch!r} is not a classifier (it registers no `head`): it has no `num_classes`"
        )
    key = default_key() if key is None else key
    source = _resolve(spec, tag, pretrained)
    if source is None:
        config = dict(overrides)
        if tag is not None:
            config = {**_from_source(f"{arch}.{tag}", read_config)[1], **config}
        if num_classes is not None:
            config["num_classes"] = num_classes
        return spec.builder(key=key, **config)
    loaded = _load_source(source, arch=arch, overrides=overrides)
    if num_classes is None:
        return loaded.model, loaded.state
    label = source if isinstance(source, str) else str(source)
    return _replace_head(spec, loaded, num_classes, key, strict, label)
