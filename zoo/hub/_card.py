"""Model cards (what a set of weights is, how it was made, how well it does) and the input
preprocessing they record."""

import dataclasses
import json
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from jaxtyping import Float32, Shaped

from ..data import normalize
from ..models import split_model_name
from ._errors import WeightsError
from ._integrity import check_files_field, is_sha256

Layout = Literal["flat", "chw", "hw", "keep"]
Normalize = Literal["auto", "unit", "standard"]
_LAYOUTS = ("flat", "chw", "hw", "keep")
_NORMALIZE = ("auto", "unit", "standard", None)


def _stat(name: str, value: Any, positive: bool = False) -> float | tuple[float, ...]:
    values = np.asarray(value, dtype=np.float64)
    ok = values.ndim <= 1 and values.size > 0 and bool(np.all(np.isfinite(values)))
    if not ok or (positive and not np.all(values > 0)):
        want = "positive" if positive else "finite"
        raise ValueError(f"Preprocess: `{name}` must be a {want} number or one per channel")
    return float(values) if values.ndim == 0 else tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How raw inputs (a batch with the examples first) become model inputs; stored in the
    card so that `zoo eval` feeds a model exactly what its recipe trained it on.

    The scaling is `zoo.data.normalize`, the function `zoo.data.batches(normalize=...,
    mean=..., std=...)` applies, so the inputs equal the training batches bit for bit:
    `"auto"` divides unsigned-integer inputs by 255 and leaves floats unchanged, `"unit"` is
    `x / 255`, `"standard"` is `(x - mean) / std` (one number, or one per channel), `None`
    is a cast to float32. Then `layout` arranges each example:

    - `"flat"`: one vector, `(n, -1)` (an MLP);
    - `"chw"`: channels first, `(n, channels, *spatial)` (a `zoo.ConvNet` of any number of
      spatial axes): a channel axis of 1 is added when `channels` is `None`, and the last
      axis moved to the front when the raw inputs are channels-last with `channels` channels;
    - `"hw"`, `"keep"`: unchanged (`"hw"`: image rows as time steps for a GRU classifier).

    `channels`: `None` when the raw inputs have no channel axis (grayscale images `(n, h,
    w)`, signals `(n, length)`), else the size of their last, channel axis (`(n, h, w, 3)`).

    On disk (in `card.json`): `{"layout": "chw", "normalize": "standard", "mean": [125.3,
    123.0, 113.9], "std": [63.0, 62.1, 66.7], "channels": 3}`.
    """

    layout: Layout = "flat"
    normalize: Normalize | None = "unit"
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    channels: int | None = None

    def __post_init__(self):
        if self.layout not in _LAYOUTS:
            raise ValueError(f"Preprocess: unknown `layout` {self.layout!r}; use {_LAYOUTS}")
        if self.normalize not in _NORMALIZE:
            raise ValueError(f"Preprocess: unknown `normalize` {self.normalize!r}")
        c = self.channels
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"Preprocess: `channels` must be a positive int or None, got {c!r}")
        # JSON gives lists; a frozen dataclass keeps tuples (hashable, equal after a round trip).
        object.__setattr__(self, "mean", _stat("mean", self.mean))
        object.__setattr__(self, "std", _stat("std", self.std, positive=True))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != (self.channels or 1):
                raise ValueError(
                    f"Preprocess: {len(value)} per-channel `{name}` values, but channels="
                    f"{self.channels}"
                )

    def __call__(self, inputs: Shaped[np.ndarray, "n ..."]) -> Float32[np.ndarray, "n ..."]:
        """**Arguments:** `inputs`, raw inputs with the examples first: `(n, height, width)`
        uint8 images, `(n, height, width, channels)` colour images, `(n, length)` signals...

        **Returns:** float32 model inputs with a leading axis of `n`.

        **Raises:** `ValueError` when the inputs' last axis is not the `channels` recorded.
        """
        inputs = np.asarray(inputs)
        if self.channels is not None and (inputs.ndim < 2 or inputs.shape[-1] != self.channels):
            raise ValueError(
                f"Preprocess: inputs of shape {inputs.shape} must be channels-last with "
                f"{self.channels} channels on their last axis"
            )
        x = normalize(inputs, self.normalize, self.mean, self.std).astype(np.float32, copy=False)
        n = x.shape[0]
        if self.layout == "flat":
            return x.reshape(n, -1)
        if self.layout == "chw":
            return x[:, None] if self.channels is None else np.moveaxis(x, -1, 1)
        return x


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a set of weights is and how it was made; `card.json` beside the weights.

    Fill in the first group when publishing; `zoo.save_pretrained` fills in the second and
    returns the completed card.

    **Given by the publisher:**

    - `name`: `"arch.tag"`, e.g. `"mlp_mnist.fashion"`; `arch` is the registered builder.
    - `config`: the builder's keyword arguments (JSON values) that rebuild the architecture;
      `{}` for the builder's defaults. `num_classes` goes here too when it is not the default.
    - `dataset`: the data the weights were trained on, e.g. `"fashion-mnist"`.
    - `metrics`: measured results, e.g. `{"test_accuracy": 0.894}` (accuracies as fractions;
      `zoo eval` compares its result with `test_accuracy`).
    - `command`: the exact command that produced the weights, e.g.
      `"zoo train mnist_mlp --epochs 10"`.
    - `recipe_config`: the recipe's full configuration (its `Config` as a dict).
    - `preprocess`: how raw images become inputs (a [`zoo.hub.Preprocess`][]), or `None`.
    - `description`: free text.

    **Filled in by `save_pretrained`:** `num_params` (floating-point parameters of the model,
    not counting its state), `weights_sha256` and `weights_size` (bytes) of `weights.eqx`,
    `files` (the SHA-256 and size of every other file of the folder: `{"weights.eqx":
    {"sha256": ..., "size": ...}, "config.json": ..., "golden.npz": ...}`, checked on every
    load; a URL pins the SHA-256 of the card itself, see [`zoo.hub.card_sha256`][]),
    `versions` (`jax`, `equinox`, `zoo`, `numpy`, `python`), `date` (ISO 8601, UTC).
    """

    name: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str | None = None
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    command: str | None = None
    recipe_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preprocess: Preprocess | None = None
    description: str = ""
    num_params: int | None = None
    weights_sha256: str | None = None
    weights_size: int | None = None
    files: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    date: str | None = None

    @property
    def architecture(self) -> str:
        """The registered architecture: the part of `name` before the first `.`."""
        return self.name.partition(".")[0]

    def to_json(self) -> dict[str, Any]:
        """**Returns:** the card as a dict of JSON values."""
        out = dataclasses.asdict(self)
        out["architecture"] = self.architecture
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "card.json") -> "ModelCard":
        """Read a card from its JSON dict; unknown keys (from newer versions) are ignored.

        Every field's type is checked here, so that a malformed card fails once, naming the
        field, rather than later wherever the field is used; `name` is validated like any
        model name.

        **Raises:** `WeightsError` naming `source` if a field is missing or malformed.
        """
        if not isinstance(data, Mapping):
            raise WeightsError(f"{source}: not a valid model card (not a JSON object)")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        try:
            _check_fields(fields)
            pre = fields.get("preprocess")
            if pre is not None:
                fields["preprocess"] = Preprocess(**pre)
            return cls(**fields)
        except (TypeError, ValueError) as e:
            # The first line: a runtime type check's message goes on to print signatures.
            why = str(e).strip().split("\n")[0]
            raise WeightsError(f"{source}: not a valid model card ({why})") from None

    def format(self) -> str:
        """**Returns:** the card as readable text (what `zoo info` prints), one line per field:
        control characters in the card's text (a newline, a terminal escape sequence) are
        shown escaped (`\\x1b`), so a card cannot add lines or drive the terminal."""

        def dumps(value: Any) -> str:
            return json.dumps(value, sort_keys=True) if value else "-"

        pre = self.preprocess
        size = "-" if self.weights_size is None else f"{self.weights_size:,} bytes"
        rows = [
            ("name", self.name),
            ("architecture", self.architecture),
            ("config", dumps(dict(self.config)) if self.config else "{} (builder defaults)"),
            ("parameters", "-" if self.num_params is None else f"{self.num_params:,}"),
            ("dataset", self.dataset or "-"),
            *((f"metric {k}", _fmt_metric(k, v)) for k, v in sorted(self.metrics.items())),
            ("command", self.command or "-"),
            ("recipe config", dumps(dict(self.recipe_config))),
            ("preprocess", "-" if pre is None else dumps(dataclasses.asdict(pre))),
            ("weights sha256", self.weights_sha256 or "-"),
            ("weights size", size),
            *(
                (f"file {n}", f"sha256 {e.get('sha256')}, {e.get('size'):,} bytes")
                for n, e in sorted(self.files.items())
            ),
            ("versions", ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items())) or "-"),
            ("date", self.date or "-"),
        ]
        if self.description:
            rows.append(("description", self.description))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{escape_control(k.ljust(width))}  {escape_control(v)}" for k, v in rows)


def escape_control(text: str) -> str:
    """`text` with every control or format character (newlines, ESC, bidirectional overrides;
    Unicode categories Cc, Cf, Zl, Zp) written as a Python escape such as `\\x1b`."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in text
    )


_MAPPINGS = ("config", "metrics", "recipe_config", "versions")
_OPTIONAL_STR = ("dataset", "command", "date")
_COUNTS = ("num_params", "weights_size")


def _check_fields(fields: dict[str, Any]) -> None:
    """Check the JSON types of a card's fields. **Raises:** `ValueError` naming the field."""
    name = fields.get("name")
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a string 'arch.tag', got {name!r}")
    split_model_name(name)  # UnsafeNameError (a ValueError) for a bad name
    for key in _MAPPINGS:
        if key in fields and not isinstance(fields[key], Mapping):
            raise ValueError(f"`{key}` must be a JSON object, got {fields[key]!r}")
    for key in _OPTIONAL_STR:
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise ValueError(f"`{key}` must be a string or null, got {fields[key]!r}")
    if not isinstance(fields.get("description", ""), str):
        raise ValueError(f"`description` must be a string, got {fields['description']!r}")
    for key in _COUNTS:
        value = fields.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"`{key}` must be a non-negative integer or null, got {value!r}")
    sha = fields.get("weights_sha256")
    if sha is not None and not is_sha256(sha):
        raise ValueError(f"`weights_sha256` must be 64 lowercase hex digits, got {sha!r}")
    pre = fields.get("preprocess")
    if pre is not None and not isinstance(pre, Mapping):
        raise ValueError(f"`preprocess` must be a JSON object or null, got {pre!r}")
    # Checked here, not by Preprocess, whose runtime type check would print its signature.
    if pre is not None and pre.get("layout", "flat") not in _LAYOUTS:
        raise ValueError(f"Preprocess: unknown `layout` {pre['layout']!r}; use {_LAYOUTS}")
    if pre is not None and pre.get("normalize", "unit") not in _NORMALIZE:
        raise ValueError(f"Preprocess: unknown `normalize` {pre['normalize']!r}")
    if "files" in fields:
        fields["files"] = check_files_field(fields["files"])
        entry = fields["files"].get("weights.eqx")
        recorded = (fields.get("weights_sha256"), fields.get("weights_size"))
        if (
            entry is not None
            and recorded != (None, None)
            and recorded
            != (
                entry["sha256"],
                entry["size"],
            )
        ):
            raise ValueError("`weights_sha256`/`weights_size` disagree with `files['weights.eqx']`")


def _fmt_metric(key: str, value: Any) -> str:
    if isinstance(value, float):
        if "accuracy" in key and 0.0 <= value <= 1.0:
            return f"{value:.4f} ({100 * value:.2f}%)"
        return f"{value:.6g}"
    return str(value)
