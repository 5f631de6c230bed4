"""Fetching a published weights folder from a URL into the download cache, verified."""

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .._paths import offline
from ._errors import ChecksumMismatchError, DownloadError, OfflineError, TruncatedWeightsError
from ._sources import CARD_FILE, CONFIG_FILE, GOLDEN_FILE, WEIGHTS_FILE, download_dir

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NETWORK_SCHEMES = ("http", "https")
_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


def is_url(source: str) -> bool:
    return "://" in source


def parse_url(url: str) -> tuple[str, str]:
    """Split `<folder URL>#sha256=<hex>` into the folder's base URL (ending in `/`) and the
    SHA-256 of its `weights.eqx`. A URL of the `weights.eqx` file itself names its folder.

    **Raises:** `ValueError` for an unsupported scheme or a missing or malformed SHA-256.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in (*_NETWORK_SCHEMES, "file"):
        raise ValueError(f"unsupported URL scheme in {url!r}: use https://, http:// or file://")
    fragment = urllib.parse.parse_qs(parts.fragment)
    sha = fragment.get("sha256", [""])[0].lower()
    if not _SHA256.fullmatch(sha):
        raise ValueError(
            f"the URL {url!r} must pin the SHA-256 of its weights.eqx as a fragment: "
            f"'{urllib.parse.urlunsplit(parts._replace(fragment=''))}#sha256=<64 hex digits>'"
        )
    path = parts.path
    if path.endswith("/" + WEIGHTS_FILE):
        path = path[: -len(WEIGHTS_FILE)]
    if not path.endswith("/"):
        path += "/"
    return urllib.parse.urlunsplit(parts._replace(path=path, fragment="")), sha


def _fetch(url: str, dest: Path, *, optional: bool = False) -> bool:
    """Stream `url` into `dest`. **Returns:** `False` if `optional` and the server has no
    such file (HTTP 404, or a missing `file://` path)."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r, open(dest, "wb") as f:
            expected = getattr(r, "length", None)  # file:// responses have no length
            received = 0
            while chunk := r.read(_CHUNK):
                f.write(chunk)
                received += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    except urllib.error.HTTPError as e:
        if optional and e.code == 404:
            return False
        raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if optional and isinstance(e.reason, FileNotFoundError):
            return False
        raise DownloadError(f"could not download {url}: {e.reason}") from None
    except OSError as e:  # timeouts, resets
        raise DownloadError(f"could not download {url}: {type(e).__name__}: {e}") from None
    # http.client ends a body cut short silently when reading in chunks.
    if expected is not None and received < expected:
        raise TruncatedWeightsError(
            f"download of {url} stopped after {received} of {expected} bytes"
        )
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_folder(url: str) -> tuple[Path, str]:
    """The local copy of the weights folder at `url` (`<base>#sha256=<hex>`), downloading it
    into `$ZOO_HOME/downloads/<sha256>/` unless it is there already.

    The files go into a temporary folder that is renamed into place only after the SHA-256
    of `weights.eqx` matched, so the cache holds verified folders or nothing.

    **Returns:** `(folder, sha256)`; the caller still verifies the card against the files.

    **Raises:** `ValueError` for a bad URL, `OfflineError` if a network download is needed
    while `ZOO_OFFLINE=1`, `DownloadError` if a file cannot be fetched,
    `ChecksumMismatchError` or `TruncatedWeightsError` for a bad download.
    """
    base, sha = parse_url(url)
    target = download_dir() / sha
    if (target / WEIGHTS_FILE).is_file():
        return target, sha
    scheme = urllib.parse.urlsplit(base).scheme
    if scheme in _NETWORK_SCHEMES and offline():
        raise OfflineError(
            f"ZOO_OFFLINE is set, so {base} cannot be downloaded; unset ZOO_OFFLINE, or "
            f"download its {CONFIG_FILE}, {CARD_FILE} and {WEIGHTS_FILE} into a folder and "
            f"pass that folder as a pathlib.Path"
        )
    download_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=download_dir(), prefix=f".{sha[:16]}.", suffix=".part"))
    try:
        # The weights first: a wrong pin fails before anything else is fetched.
        _fetch(base + WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        if (got := _sha256(tmp / WEIGHTS_FILE)) != sha:
            raise ChecksumMismatchError(
                f"{base}{WEIGHTS_FILE} has SHA-256 {got}, but the URL pins {sha}; "
                f"nothing was cached"
            )
        _fetch(base + CONFIG_FILE, tmp / CONFIG_FILE)
        _fetch(base + CARD_FILE, tmp / CARD_FILE)
        _fetch(base + GOLDEN_FILE, tmp / GOLDEN_FILE, optional=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process cached the same weights meanwhile; theirs are as good.
            if not (target / WEIGHTS_FILE).is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return target, sha
