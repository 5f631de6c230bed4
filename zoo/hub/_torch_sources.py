"""Weights published in PyTorch's formats (torchvision's `.pth`, timm's `.safetensors`),
downloaded once with their SHA-256 checked, converted once, and cached in zoo's own format.

The cached folder is `$ZOO_HOME/weights/<arch>.<tag>/`, an ordinary zoo weights folder (its
card records the source, its license, the conversion's tolerance and the preprocessing).
`zoo.create_model("<arch>.<tag>", pretrained=True)` and `zoo.load_pretrained` of a name in
the table below that is not there yet call [`zoo.hub.fetch_torch_weights`][] first.
"""

import contextlib
import dataclasses
import hashlib
import importlib
import shutil
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import equinox as eqx

from .._paths import offline
from ..models import split_model_name
from ._card import ModelCard
from ._convert import from_timm_vit, from_torchvision_resnet
from ._create import model_card
from ._download import Limits, clean_stale_parts, fetch, part_dir
from ._errors import ChecksumMismatchError, OfflineError, UnknownModelError, WeightsError
from ._pretrained import save_pretrained
from ._safetensors import load_safetensors
from ._sources import CARD_FILE, user_weights_dir

Family = Literal["torchvision_resnet", "timm_vit"]

# What test_convert.py measured against torchvision and timm (max |zoo - torch| over the
# largest |torch|, float32, per stage/block and logits): at most 3.4e-6, asserted < 2e-5.
CONVERSION_TOLERANCE = "max abs error / max abs activation < 2e-5 (measured <= 3.4e-6), float32"

_IMAGENET = {
    "input_size": [3, 224, 224],
    "resize": 256,
    "crop": 224,
    "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@dataclasses.dataclass(frozen=True)
class TorchSource:
    """A set of weights in PyTorch's naming, at a URL pinned by its SHA-256.

    - `arch`: the registered zoo architecture it converts into (`"resnet50"`).
    - `url`: the file: `.pth` (read with `torch.load(weights_only=True)`, so torch must be
      installed) or `.safetensors` (read by zoo itself).
    - `sha256`: the file's SHA-256, 64 hex digits; a download that differs is discarded.
    - `size`: the file's size in bytes, if known: the download stops at it. Without it the
      cap is `$ZOO_DOWNLOAD_MAX_BYTES` (default 16 GiB).
    - `family`: `"torchvision_resnet"` or `"timm_vit"`: whose names the file uses.
    - `license`, `dataset`, `metrics` (the publisher's), `preprocess` (input size, resize,
      crop, interpolation, per-channel mean/std on a 0..1 scale), `description`: for the
      card.
    """

    arch: str
    url: str
    sha256: str
    family: Family
    size: int | None = None
    license: str = ""
    dataset: str | None = None
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    preprocess: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"TorchSource: `sha256` must be 64 lowercase hex digits: {self.url}")
        if self.family not in ("torchvision_resnet", "timm_vit"):
            raise ValueError(f"TorchSource: unknown `family` {self.family!r}")
        if self.size is not None and (isinstance(self.size, bool) or self.size < 1):
            raise ValueError(f"TorchSource: `size` must be a positive number of bytes: {self.url}")

    @property
    def format(self) -> str:
        """`"pth"` or `"safetensors"`, from the URL's file name."""
        name = urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1]
        if name.endswith(".safetensors"):
            return "safetensors"
        if name.endswith((".pth", ".pt", ".bin")):
            return "pth"
        raise ValueError(f"TorchSource: cannot tell the format of {self.url!r}")


# Known remote weights, by zoo name. The SHA-256 below is torchvision's file's as recorded
# by a third party (its first 8 digits are the ones torchvision puts in the file name); it
# could not be checked here, without network: a wrong value fails the download safely.
TORCH_SOURCES: dict[str, TorchSource] = {
    "resnet50.tv_in1k": TorchSource(
        arch="resnet50",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
        family="torchvision_resnet",
        license="BSD-3-Clause (torchvision); trained on ImageNet-1k, whose terms allow "
        "non-commercial research use",
        dataset="imagenet-1k",
        metrics={"test_accuracy": 0.7613, "test_accuracy_top5": 0.92862},
        preprocess=_IMAGENET,
        description="torchvision's ResNet50_Weights.IMAGENET1K_V1, converted",
    ),
}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read(path: Path, source: TorchSource) -> Mapping[str, Any]:
    if source.format == "safetensors":
        return load_safetensors(path)
    try:  # optional: only `.pth` sources need it
        torch = importlib.import_module("torch")
    except ImportError:
        raise WeightsError(
            f"{source.url} is a torch .pth file: reading it needs torch "
            f"(`pip install 'eqx-zoo[convert]'`)"
        ) from None
    # weights_only: torch's restricted loader, which refuses to run any pickled code.
    return torch.load(path, map_location="cpu", weights_only=True)


def fetch_torch_weights(
    name: str,
    *,
    source: TorchSource | None = None,
    deadline_s: float | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Download, verify, convert and cache a torch weight set; **returns** its zoo folder.

    The file goes to a temporary name under `$ZOO_HOME/downloads/` and is converted only if
    its SHA-256 matches the pin; the converted weights are published (atomically, by
    [`zoo.save_pretrained`][]) to `$ZOO_HOME/weights/<name>/`, and the download is deleted.
    A second call finds the folder and downloads nothing.

    **Arguments:**

    - `name`: `"arch.tag"`, a key of `zoo.hub.torch_sources()` unless `source` is given.
    - `source`: a [`zoo.hub.TorchSource`][] to use instead of the table's entry.
    - `deadline_s`: seconds the download may take (default `$ZOO_DOWNLOAD_DEADLINE`, else
      600).
    - `max_bytes`: the largest file accepted when the source states no `size` (default
      `$ZOO_DOWNLOAD_MAX_BYTES`, else 16 GiB).

    **Raises:** `UnknownModelError` for a name without a source; `OfflineError` if a network
    download is needed while `ZOO_OFFLINE=1`; `DownloadError`, `TruncatedWeightsError`,
    `ChecksumMismatchError`, `DownloadLimitError` for a bad, oversized or too slow download
    (nothing is cached; interrupted downloads of earlier runs are cleaned);
    `ConversionError` if the file does not fit the architecture.
    """
    arch, tag = split_model_name(name)
    if tag is None:
        raise ValueError(f"fetch_torch_weights: name {name!r} must be 'arch.tag'")
    if source is None:
        if name not in TORCH_SOURCES:
            known = ", ".join(sorted(TORCH_SOURCES)) or "none"
            raise UnknownModelError(f"no torch source named {name!r}; known: {known}")
        source = TORCH_SOURCES[name]
    if source.arch != arch:
        raise ValueError(
            f"fetch_torch_weights: {name!r} names {arch!r}, the source {source.arch!r}"
        )
    target = user_weights_dir() / name
    if (target / CARD_FILE).is_file():
        recorded = model_card(target).recipe_config.get("source_sha256")
        if recorded == source.sha256:
            return target
        raise WeightsError(
            f"{target} holds weights converted from another source (SHA-256 {recorded}); "
            f"remove that folder to convert {source.url}"
        )
    scheme = urllib.parse.urlsplit(source.url).scheme
    if scheme in ("http", "https") and offline():
        raise OfflineError(f"ZOO_OFFLINE is set, so {source.url} cannot be downloaded")
    limits = Limits.from_env(deadline_s=deadline_s, max_bytes=max_bytes)
    clean_stale_parts()
    tmp = part_dir(source.sha256)
    try:
        path = tmp / f"weights.{source.format}"
        limit = source.size if source.size is not None else limits.max_bytes
        fetch(source.url, path, limit=limit, deadline_s=limits.deadline_s)
        if (got := _sha256(path)) != source.sha256:
            raise ChecksumMismatchError(
                f"{source.url} has SHA-256 {got}, but its source pins {source.sha256}; "
                f"nothing was cached"
            )
        tensors = _read(path, source)
        convert = (
            from_torchvision_resnet if source.family == "torchvision_resnet" else from_timm_vit
        )
        model, state = convert(tensors, arch)
        config = {"in_channels": model.in_channels, "num_classes": model.num_classes}
        card = ModelCard(
            name=name,
            config=config,
            dataset=source.dataset,
            metrics=dict(source.metrics),
            command=f"zoo.hub.fetch_torch_weights({name!r})",
            recipe_config={
                "source_url": source.url,
                "source_sha256": source.sha256,
                "source_family": source.family,
                "license": source.license,
                "conversion_tolerance": CONVERSION_TOLERANCE,
                "preprocess": dict(source.preprocess),
            },
            description=source.description or f"converted from {source.url}",
        )
        save_pretrained(target, eqx.nn.inference_mode(model, False), state, card=card)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return target


def torch_sources() -> list[str]:
    """**Returns:** the names of the known torch weight sets (`zoo.hub.torch_sources()`)."""
    return sorted(TORCH_SOURCES)
