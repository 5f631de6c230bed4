"""What ties every file of a weights folder to one SHA-256: the card lists the size and
SHA-256 of each other file (`weights.eqx`, `config.json`, `golden.npz`), and a URL pins the
SHA-256 of the card, so the pin covers the whole folder."""

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import (
    ChecksumMismatchError,
    TruncatedWeightsError,
    WeightsError,
    WeightsNotFoundError,
)
from ._sources import CARD_FILE, CONFIG_FILE, GOLDEN_FILE, WEIGHTS_FILE

# The only names a card may list: they become file names in the download cache, so a card
# must never be able to name `../x` or another folder's file.
LISTED_FILES = (WEIGHTS_FILE, CONFIG_FILE, GOLDEN_FILE)
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: Any) -> bool:
    """Whether `value` is 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(data: bytes) -> dict[str, Any]:
    """The card's record of one file: `{"sha256": <64 hex>, "size": <bytes>}`."""
    return {"sha256": sha256_hex(data), "size": len(data)}


def check_files_field(files: Any) -> dict[str, dict[str, Any]]:
    """Validate a card's `files` (`{}` for a card written before zoo listed its files).

    **Raises:** `ValueError` for a name that is not one of `LISTED_FILES`, a missing
    `weights.eqx` or `config.json`, or an entry that is not `{"sha256", "size"}`.
    """
    if not isinstance(files, Mapping):
        raise ValueError(f"`files` must map file names to their sha256 and size, got {files!r}")
    out = {}
    for name, entry in files.items():
        if name not in LISTED_FILES:
            raise ValueError(f"`files` lists {name!r}; a card may list only {LISTED_FILES}")
        size = entry.get("size") if isinstance(entry, Mapping) else None
        sha = entry.get("sha256") if isinstance(entry, Mapping) else None
        if not is_sha256(sha) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(
                f"`files[{name!r}]` must be {{'sha256': <64 lowercase hex>, 'size': <bytes>}}, "
                f"got {entry!r}"
            )
        out[name] = {"sha256": sha, "size": size}
    if out and (missing := [n for n in REQUIRED_FILES if n not in out]):
        raise ValueError(f"`files` does not list {', '.join(missing)}")
    return out


def verify_bytes(data: bytes, entry: Mapping[str, Any], where: str, card: str) -> None:
    """Check `data` (the file at `where`) against its card entry.

    **Raises:** `TruncatedWeightsError` if it is shorter, `ChecksumMismatchError` if it is
    longer or its SHA-256 differs.
    """
    size, sha = entry["size"], entry["sha256"]
    if len(data) < size:
        raise TruncatedWeightsError(f"{where} is truncated: {len(data):,} of {size:,} bytes")
    if len(data) != size:
        raise ChecksumMismatchError(
            f"{where} has {len(data):,} bytes, but its card ({card}) says {size:,}"
        )
    if (got := sha256_hex(data)) != sha:
        raise ChecksumMismatchError(
            f"{where} is corrupt: its SHA-256 is {got}, but its card ({card}) says {sha}"
        )


def check_pin(card_bytes: bytes, pinned: str, where: str) -> None:
    """Check the bytes of `card.json` (at `where`) against the SHA-256 a URL pins.

    **Raises:** `ChecksumMismatchError`; when the pin is the SHA-256 of the card's
    `weights.eqx` (URLs written for zoo 0.1, whose pin covered only the weights), the error
    says so and which pin covers the whole folder.
    """
    got = sha256_hex(card_bytes)
    if got == pinned:
        return
    try:
        weights_sha = json.loads(card_bytes).get("weights_sha256")
    except (ValueError, UnicodeDecodeError, AttributeError):
        weights_sha = None
    if weights_sha == pinned:
        raise ChecksumMismatchError(
            f"the URL pins {pinned}, the SHA-256 of weights.eqx: a pin of zoo 0.1, which did not "
            f"cover config.json, card.json and golden.npz, so it is no longer accepted. Pin the "
            f"card instead, '#sha256=<SHA-256 of card.json>' (here {got}, if {where} is the card "
            f"you trust; see zoo.hub.card_sha256)"
        )
    raise ChecksumMismatchError(f"{where} has SHA-256 {got}, but the URL pins {pinned}")


def read_file(path: Path) -> bytes:
    """**Raises:** `WeightsNotFoundError` naming `path` if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WeightsNotFoundError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise WeightsError(f"{path} is a folder, not a file") from None


def card_sha256(directory: str | os.PathLike) -> str:
    """The SHA-256 of a weights folder's `card.json`: what a URL of the published folder pins,
    `https://host/path/<arch>.<tag>/#sha256=<this>`. The card lists the size and SHA-256 of
    every other file, so this one value covers the whole folder.

    **Arguments:** `directory`, a weights folder written by `zoo.save_pretrained`.

    **Returns:** 64 lowercase hex digits.

    **Raises:** `WeightsNotFoundError` if the folder has no `card.json`; `WeightsError` if the
    card lists no files (written by zoo 0.1: save it again to publish it at a URL).
    """
    path = Path(directory) / CARD_FILE
    data = read_file(path)
    try:
        files = json.loads(data).get("files")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise WeightsError(f"{path} is not a JSON object") from None
    if not files:
        raise WeightsError(
            f"{path} lists no files with their SHA-256 (it was written by zoo 0.1), so pinning it "
            f"would not cover them; save the folder again with zoo.save_pretrained"
        )
    return sha256_hex(data)
