"""Model cards (what a set of weights is, how it was made, how well it does) and the input
preprocessing they record."""

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from jaxtyping import Float32, UInt8

from ._errors import WeightsError

Layout = Literal["flat", "chw", "hw"]
Normalize = Literal["unit", "standard"]


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images `(n, height, width)` become model inputs; stored in the card so
    that `zoo eval` feeds a model exactly what its recipe trained it on.

    The scaling is that of `zoo.data.batches(normalize=..., mean=..., std=...)`, bit for bit:
    `"unit"` is `images / 255`, `"standard"` is `(images - mean) / std` with `mean` and
    `std` in pixel units (0..255), `None` is a cast to float32. Then `layout` reshapes each
    image: `"flat"` to `(height * width,)` (an MLP), `"chw"` to `(1, height, width)` (a
    ConvNet), `"hw"` keeps `(height, width)` (rows as time steps, a GRU classifier).

    On disk (in `card.json`): `{"layout": "flat", "normalize": "unit", "mean": 0.0, "std": 1.0}`.
    """

    layout: Layout = "flat"
    normalize: Normalize | None = "unit"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.layout not in ("flat", "chw", "hw"):
            raise ValueError(f"Preprocess: unknown `layout` {self.layout!r}")
        if self.normalize not in ("unit", "standard", None):
            raise ValueError(f"Preprocess: unknown `normalize` {self.normalize!r}")
        if not self.std > 0:
            raise ValueError(f"Preprocess: `std` must be positive, got {self.std!r}")

    def __call__(self, images: UInt8[np.ndarray, "n height width"]) -> Float32[np.ndarray, "n ..."]:
        """**Arguments:** `images`, uint8 of shape `(n, height, width)`.

        **Returns:** float32 model inputs with a leading axis of `n`.
        """
        # The same ufuncs as zoo.data's pipeline, so inputs match the training batches exactly.
        if self.normalize == "unit":
            x = np.divide(images, np.float32(255), dtype=np.float32)
        elif self.normalize == "standard":
            x = np.subtract(images, np.float32(self.mean), dtype=np.float32)
            x /= np.float32(self.std)
        else:
            x = images.astype(np.float32)
        n, h, w = images.shape
        if self.layout == "flat":
            return x.reshape(n, h * w)
        if self.layout == "chw":
            return x.reshape(n, 1, h, w)
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

        **Raises:** `WeightsError` naming `source` if a field is missing or malformed.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        try:
            pre = fields.get("preprocess")
            if pre is not None:
                fields["preprocess"] = Preprocess(**pre)
            return cls(**fields)
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{source}: not a valid model card ({e})") from None

    def format(self) -> str:
        """**Returns:** the card as readable text (what `zoo info` prints)."""

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
            ("versions", ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items())) or "-"),
            ("date", self.date or "-"),
        ]
        if self.description:
            rows.append(("description", self.description))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _fmt_metric(key: str, value: Any) -> str:
    if isinstance(value, float):
        if "accuracy" in key and 0.0 <= value <= 1.0:
            return f"{value:.4f} ({100 * value:.2f}%)"
        return f"{value:.6g}"
    return str(value)
