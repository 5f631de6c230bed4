"""The registry of architectures: builder functions by name, and the rules for names."""

import dataclasses
import re
from collections.abc import Callable
from typing import Any, TypeVar, overload

import equinox as eqx

from ._errors import UnknownModelError, UnsafeNameError

Builder = Callable[..., tuple[Any, eqx.nn.State]]
_B = TypeVar("_B", bound=Builder)

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


def split_name(name: str) -> tuple[str, str | None]:
    """Split `"arch"` or `"arch.tag"` into `(arch, tag)`, refusing unsafe names.

    **Raises:** `UnsafeNameError` naming the offending name.
    """
    if not isinstance(name, str) or len(name) > _MAX_LEN:
        raise UnsafeNameError(f"invalid model name {name!r}: use {_RULE}")
    arch, dot, tag = name.partition(".")
    if not _ARCH.fullmatch(arch) or (dot and not _TAG.fullmatch(tag)):
        hint = ""
        if "/" in name or "\\" in name:
            hint = "; to load a folder, pass it as a `pathlib.Path`"
        raise UnsafeNameError(f"invalid model name {name!r}: use {_RULE}{hint}")
    return arch, (tag if dot else None)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    - `name`: the architecture's name (no tag).
    - `builder`: `builder(*, key, num_classes=None, **kwargs) -> (model, state)`.
    - `head`: `head(model)` selects the classifier head, the part that `num_classes`
      changes; `None` for models without classes.
    - `default_tag`: the weights that `create_model(name, pretrained=True)` takes.
    """

    name: str
    builder: Builder
    head: Callable[[Any], Any] | None
    default_tag: str | None

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
) -> Callable[[_B], _B]: ...


def register_model(
    builder: Builder | None = None,
    /,
    *,
    name: str | None = None,
    head: Callable[[Any], Any] | None = None,
    default_tag: str | None = None,
) -> Any:
    """Register an architecture, as `@register_model` or `@register_model(name=..., ...)`.

    A builder is `builder(*, key, num_classes=None, **kwargs) -> (model, state)`: it builds
    the model from keyword arguments that are JSON values (they are stored in
    `config.json`) and returns an empty `eqx.nn.State` for stateless models
    (`eqx.nn.make_with_state` does both). `num_classes=None` keeps the builder's default.

    **Arguments:**

    - `builder`: the builder function (when used without parentheses).
    - `name`: the architecture's name; default: the function's name.
    - `head`: `head(model)` returns the classifier head (for example `lambda m: m.head`), the
      only part that `num_classes` changes; this lets pretrained weights be loaded with a new
      head. `None` for models without classes.
    - `default_tag`: the weights taken by `create_model(name, pretrained=True)`; without it,
      the only tag available is taken.

    **Returns:** the builder, unchanged.

    **Raises:** `ValueError` if the name is taken; `UnsafeNameError` for an invalid name.
    """

    def register(fn: _B) -> _B:
        arch = fn.__name__ if name is None else name
        if split_name(arch)[1] is not None:
            raise UnsafeNameError(f"an architecture name cannot contain '.', got {arch!r}")
        if default_tag is not None:
            check_tag(default_tag)
        if arch in _REGISTRY:
            old = _REGISTRY[arch].builder
            raise ValueError(
                f"a model named {arch!r} is already registered (by "
                f"{old.__module__}.{old.__qualname__}); choose another name"
            )
        _REGISTRY[arch] = ModelSpec(arch, fn, head, default_tag)
        return fn

    return register if builder is None else register(builder)  # pyright: ignore[reportArgumentType]


def get_spec(arch: str) -> ModelSpec:
    """**Returns:** the registered architecture `arch`. **Raises:** `UnknownModelError`."""
    try:
        return _REGISTRY[arch]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownModelError(
            f"unknown architecture {arch!r}; registered: {known} (a package that registers "
            f"its own models must be imported first)"
        ) from None


def registered_names() -> list[str]:
    """**Returns:** the registered architecture names, sorted."""
    return sorted(_REGISTRY)
