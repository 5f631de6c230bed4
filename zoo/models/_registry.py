"""The registry of architectures: builder functions by name, each with its table of pretrained
weight sets, and the rules for names.

It lives beside the models, not in the hub, so that a model's file can register itself without
importing any loading code (timm's layout): one architecture, one file, holding the module, its
`@register_model` builders and its `WeightSet`s. The hub (`zoo.hub`) reads this registry to find,
verify and load weights.

A new architecture file, say `zoo/models/_resnet.py`, registers itself like this, and is
imported by `zoo/models/__init__.py` so that registration happens when `zoo` is imported:

    from ._registry import WeightSet, register_model

    WEIGHTS = {
        # Bundled: the folder zoo/hub/weights/resnet18.imagenet/ (config, weights, card).
        "imagenet": WeightSet(dataset="imagenet-1k", metrics={"test_accuracy": 0.697}),
        # Published elsewhere: a folder URL pinning the SHA-256 of its card.json.
        "cifar": WeightSet(url="https://host/resnet18.cifar/#sha256=<64 hex digits>"),
    }

    @register_model(head=lambda m: m.fc, default_tag="imagenet", weights=WEIGHTS)
    def resnet18(*, key, **kwargs) -> tuple[ResNet, eqx.nn.State]:
        \"\"\"ResNet-18 (`zoo.ResNet` with blocks (2, 2, 2, 2)).\"\"\"
        return eqx.nn.make_with_state(ResNet)(**{"blocks": (2, 2, 2, 2), **kwargs}, key=key)
"""

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import equinox as eqx

Builder = Callable[..., tuple[Any, eqx.nn.State]]
_B = TypeVar("_B", bound=Builder)


class UnsafeNameError(ValueError):
    """A model name or tag outside `[a-z0-9_.-]`, or one that could leave its folder."""


class UnknownModelError(LookupError):
    """No architecture is registered under the name."""


# A name is also a folder name under the weights roots, so it admits no path separator, no
# "..", no leading dot (hidden folders, temporary files) and no upper case (two names that
# differ only in case would collide on case-insensitive file systems).
_ARCH = re.compile(r"[a-z0-9_][a-z0-9_-]*")
_TAG = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_MAX_LEN = 128
_RULE = (
    "lowercase letters, digits, '_' and '-', with '.' only between an architecture and a tag "
    "(e.g. 'mlp_mnist.fashion'); no path separators or '..'"
)


def check_tag(tag: str) -> str:
    """**Returns:** `tag` if it is a valid weights tag. **Raises:** `UnsafeNameError`."""
    if not isinstance(tag, str) or len(tag) > _MAX_LEN or not _TAG.fullmatch(tag):
        raise UnsafeNameError(f"invalid weights tag {tag!r}: use {_RULE}")
    return tag


def split_model_name(name: str) -> tuple[str, str | None]:
    """Split `"arch"` or `"arch.tag"` into `(arch, tag)`, refusing unsafe names.

    **Raises:** `UnsafeNameError` naming the offending name.
    """
    if not isinstance(name, str) or len(name) > _MAX_LEN:
        raise UnsafeNameError(f"invalid model name {name!r}: use {_RULE}")
    arch, dot, tag = name.partition(".")
    if not _ARCH.fullmatch(arch) or (dot and not _TAG.fullmatch(tag)):
        hint = ""
        if "/" in name or "\\" in name:
            hint = "; to load a folder, pass the path of an existing folder"
        raise UnsafeNameError(f"invalid model name {name!r}: use {_RULE}{hint}")
    return arch, (tag if dot else None)


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One pretrained weight set of an architecture (timm's `pretrained_cfg`).

    - `url`: where the weights live. `None` (the default) means bundled with zoo, in the
      folder `zoo/hub/weights/<arch>.<tag>/`; otherwise the URL of a published folder that
      pins the SHA-256 of its `card.json` (which lists the SHA-256 of every other file; see
      `zoo.hub.card_sha256`): `"https://host/path/<arch>.<tag>/#sha256=<hex>"`.
    - `dataset`: the data the weights were trained on, e.g. `"fashion-mnist"`.
    - `metrics`: the headline results their card records, e.g. `{"test_accuracy": 0.898}`.
    - `preprocess`: how raw inputs become model inputs, as the card's `preprocess` mapping
      (e.g. `{"layout": "flat", "normalize": "unit"}`); `None` for no fixed preprocessing.
    - `description`: one line of free text.

    The weights folder's `card.json` remains the record the weights are verified against;
    zoo's tests check that every table entry agrees with its card.
    """

    url: str | None = None
    dataset: str | None = None
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    preprocess: Mapping[str, Any] | None = None
    description: str = ""

    @property
    def bundled(self) -> bool:
        """Whether the weights ship with zoo (no `url`)."""
        return self.url is None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    - `name`: the architecture's name (no tag).
    - `builder`: `builder(*, key, **kwargs) -> (model, state)`; the keyword arguments are the
      model's constructor arguments (`num_classes`, widths, ...).
    - `head`: `head(model)` selects the classifier head, the part that `num_classes`
      changes; `None` for models without classes.
    - `default_tag`: the weights that `create_model(name, pretrained=True)` takes.
    - `weights`: the architecture's pretrained weight sets, by tag.
    """

    name: str
    builder: Builder
    head: Callable[[Any], Any] | None
    default_tag: str | None
    weights: Mapping[str, WeightSet] = dataclasses.field(default_factory=dict)

    @property
    def description(self) -> str:
        """The first line of the builder's docstring."""
        doc = (self.builder.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, ModelSpec] = {}


@overload
def register_model(builder: _B, /) -> _B: ...


@overload
def register_model(
    *,
    name: str | None = None,
    head: Callable[[Any], Any] | None = None,
    default_tag: str | None = None,
    weights: Mapping[str, WeightSet] | None = None,
) -> Callable[[_B], _B]: ...


def register_model(
    builder: Builder | None = None,
    /,
    *,
    name: str | None = None,
    head: Callable[[Any], Any] | None = None,
    default_tag: str | None = None,
    weights: Mapping[str, WeightSet] | None = None,
) -> Any:
    """Register an architecture, as `@register_model` or `@register_model(name=..., ...)`.

    A builder is `builder(*, key, **kwargs) -> (model, state)`: it builds the model from
    keyword arguments that are JSON values (they are stored in `config.json`) and are the
    model's own constructor arguments (so that `zoo.save_pretrained` can read them back from
    the model), and returns an empty `eqx.nn.State` for stateless models
    (`eqx.nn.make_with_state` does both). `num_classes` is passed only when asked for.

    **Arguments:**

    - `builder`: the builder function (when used without parentheses).
    - `name`: the architecture's name; default: the function's name.
    - `head`: `head(model)` returns the classifier head (for example `lambda m: m.head`), the
      only part that `num_classes` changes; this lets pretrained weights be loaded with a new
      head. `None` for models without classes.
    - `default_tag`: the weights taken by `create_model(name, pretrained=True)`; without it,
      the only tag available is taken.
    - `weights`: the architecture's [`zoo.models.WeightSet`][]s by tag (bundled or by URL).

    **Returns:** the builder, unchanged.

    **Raises:** `ValueError` if the name is taken; `UnsafeNameError` for an invalid name or tag.
    """
    table = dict(weights or {})

    def register(fn: _B) -> _B:
        arch = fn.__name__ if name is None else name
        if split_model_name(arch)[1] is not None:
            raise UnsafeNameError(f"an architecture name cannot contain '.', got {arch!r}")
        if default_tag is not None:
            check_tag(default_tag)
        for tag, entry in table.items():
            check_tag(tag)
            if not isinstance(entry, WeightSet):
                raise TypeError(f"{arch}: weights[{tag!r}] must be a zoo.models.WeightSet")
        if arch in _REGISTRY:
            old = _REGISTRY[arch].builder
            raise ValueError(
                f"a model named {arch!r} is already registered (by "
                f"{old.__module__}.{old.__qualname__}); choose another name"
            )
        _REGISTRY[arch] = ModelSpec(arch, fn, head, default_tag, table)
        return fn

    return register if builder is None else register(builder)  # pyright: ignore[reportArgumentType]


def get_model_spec(arch: str) -> ModelSpec:
    """**Returns:** the registered architecture `arch`. **Raises:** `UnknownModelError`."""
    try:
        return _REGISTRY[arch]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownModelError(
            f"unknown architecture {arch!r}; registered: {known} (a package that registers "
            f"its own models must be imported first)"
        ) from None


def registered_architectures() -> list[str]:
    """**Returns:** the registered architecture names, sorted."""
    return sorted(_REGISTRY)
