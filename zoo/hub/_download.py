"""Fetching a published weights folder from a URL into the download cache, verified, with a
size cap and a deadline on every file.

The URL pins the SHA-256 of the folder's `card.json`; the card lists the size and SHA-256 of
every other file. So the card is fetched first (at most `max_json_bytes`) and checked against
the pin, then each listed file is fetched, never reading more than the size the card states,
and checked against the card. The files go into a temporary folder that is renamed to
`$ZOO_HOME/downloads/<pin>/` only when all of them matched.

Limits (keyword arguments of `fetch_folder`, or the environment for `zoo.create_model`):

- `ZOO_DOWNLOAD_DEADLINE`: seconds one file may take, all of it (default 600); a server that
  sends a byte a minute fails after this long rather than hanging.
- `ZOO_DOWNLOAD_MAX_JSON_BYTES`: the largest `card.json` (and `config.json`) accepted
  (default 4 MiB).
- `ZOO_DOWNLOAD_MAX_BYTES`: the largest file whose size no card or caller states (default
  16 GiB; the torch files of `zoo.hub.fetch_torch_weights`).
"""

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from .._atomic import atomic_open, fsync_dir
from .._paths import offline
from ._card import ModelCard
from ._errors import (
    ChecksumMismatchError,
    DamagedCacheWarning,
    DownloadError,
    DownloadLimitError,
    OfflineError,
    TruncatedWeightsError,
    WeightsError,
)
from ._integrity import check_pin, is_sha256, verify_bytes
from ._sources import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, download_dir

_NETWORK_SCHEMES = ("http", "https")
_READ_TIMEOUT_S = 60.0  # per read: what one silent connection may cost before it fails
_CHUNK = 1 << 16
# A temporary folder whose owner cannot be checked (another host, an older zoo) is taken for
# abandoned only after a day: no download is allowed to take that long by default.
_STALE_S = 24 * 3600.0
_PART = ".part"

DEADLINE_ENV = "ZOO_DOWNLOAD_DEADLINE"
MAX_JSON_ENV = "ZOO_DOWNLOAD_MAX_JSON_BYTES"
MAX_BYTES_ENV = "ZOO_DOWNLOAD_MAX_BYTES"


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long one file may take (`deadline_s`, seconds) and how large a file may be:
    `max_json_bytes` for `card.json`/`config.json`, `max_bytes` for a file of unstated size."""

    deadline_s: float = 600.0
    max_json_bytes: int = 4 << 20
    max_bytes: int = 16 << 30

    def __post_init__(self):
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError(f"download deadline must be a positive number, got {self.deadline_s}")
        for name in ("max_json_bytes", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"download `{name}` must be positive, got {getattr(self, name)}")

    @classmethod
    def from_env(
        cls,
        *,
        deadline_s: float | None = None,
        max_json_bytes: int | None = None,
        max_bytes: int | None = None,
    ) -> "Limits":
        """The limits given, else those of the environment, else the defaults.

        **Raises:** `ValueError` naming the variable for a value that is not a positive number.
        """
        default = cls()

        def env(name: str, kind: type, fallback):
            text = os.environ.get(name, "").strip()
            if not text:
                return fallback
            try:
                value = kind(text)
            except ValueError:
                value = None
            if value is None or not value > 0 or not math.isfinite(value):
                raise ValueError(f"${name}={text!r}: expected a positive {kind.__name__}")
            return value

        return cls(
            deadline_s=deadline_s
            if deadline_s is not None
            else env(DEADLINE_ENV, float, default.deadline_s),
            max_json_bytes=max_json_bytes
            if max_json_bytes is not None
            else env(MAX_JSON_ENV, int, default.max_json_bytes),
            max_bytes=max_bytes
            if max_bytes is not None
            else env(MAX_BYTES_ENV, int, default.max_bytes),
        )


def is_url(source: str) -> bool:
    return "://" in source


@dataclasses.dataclass(frozen=True)
class FolderURL:
    """A parsed `<folder URL>[?query]#sha256=<hex>`: file URLs are `file_url(name)`."""

    base: str  # scheme://host/path/ (ending in "/"), without query or fragment
    query: str  # kept on every file's URL (a token or version parameter the server needs)
    pin: str  # SHA-256 of card.json

    def file_url(self, name: str) -> str:
        return self.base + name + (f"?{self.query}" if self.query else "")


def parse_url(url: str) -> FolderURL:
    """Split `<folder URL>#sha256=<hex>` into the folder's URL and the SHA-256 of its
    `card.json`. A URL of the folder's `card.json` (or `weights.eqx`) names the folder.

    A query string (`.../name/?token=abc#sha256=...`) is kept and sent with every file of
    the folder, which is what a server that needs a token or version parameter expects; the
    file names are joined to the URL's path.

    **Raises:** `ValueError` for an unsupported scheme or a missing or malformed SHA-256.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in (*_NETWORK_SCHEMES, "file"):
        raise ValueError(f"unsupported URL scheme in {url!r}: use https://, http:// or file://")
    fragment = urllib.parse.parse_qs(parts.fragment)
    sha = fragment.get("sha256", [""])[0].lower()
    if not is_sha256(sha):
        raise ValueError(
            f"the URL {url!r} must pin the SHA-256 of its card.json as a fragment: "
            f"'{urllib.parse.urlunsplit(parts._replace(fragment=''))}#sha256=<64 hex digits>' "
            f"(zoo.hub.card_sha256(folder) gives it)"
        )
    path = parts.path
    for name in (CARD_FILE, WEIGHTS_FILE):
        if path.endswith("/" + name):
            path = path[: -len(name)]
    if not path.endswith("/"):
        path += "/"
    base = urllib.parse.urlunsplit(parts._replace(path=path, query="", fragment=""))
    return FolderURL(base=base, query=parts.query, pin=sha)


class _NetworkRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to `http(s)://` only: urllib would also follow one to `ftp://`."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in _NETWORK_SCHEMES:
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to {newurl!r} refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NetworkRedirectsOnly)


def fetch(url: str, dest: Path, *, limit: int, deadline_s: float) -> None:
    """Stream `url` into `dest` (atomically), reading at most `limit` bytes and for at most
    `deadline_s` seconds (plus at most one read's timeout).

    **Raises:** `DownloadLimitError` past the size or the deadline, `TruncatedWeightsError`
    for a body shorter than its `Content-Length`, `DownloadError` for anything else.
    """
    start = time.monotonic()
    try:
        with (
            _OPENER.open(url, timeout=min(_READ_TIMEOUT_S, deadline_s)) as r,
            atomic_open(dest, "wb") as f,
        ):
            expected = getattr(r, "length", None)  # file:// responses have no length
            if expected is not None and expected > limit:
                raise DownloadLimitError(
                    f"{url} announces {expected:,} bytes, more than the {limit:,} bytes expected; "
                    f"nothing was cached"
                )
            # read1: one network read per call, so a trickling server cannot hold one call
            # (and the deadline check after it) for a whole chunk's worth of bytes.
            read = getattr(r, "read1", r.read)
            received = 0
            while chunk := read(_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise DownloadLimitError(
                        f"{url} sent more than the {limit:,} bytes expected; nothing was cached"
                    )
                f.write(chunk)
                if (elapsed := time.monotonic() - start) > deadline_s:
                    raise DownloadLimitError(
                        f"{url} took more than {deadline_s:g} s ({received:,} bytes after "
                        f"{elapsed:.0f} s); nothing was cached. Set ${DEADLINE_ENV} to allow "
                        f"more time"
                    )
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"could not download {url}: {e.reason}") from None
    except OSError as e:  # timeouts, resets
        raise DownloadError(f"could not download {url}: {type(e).__name__}: {e}") from None
    # http.client ends a body cut short silently when reading in chunks.
    if expected is not None and received < expected:
        dest.unlink(missing_ok=True)
        raise TruncatedWeightsError(
            f"download of {url} stopped after {received} of {expected} bytes"
        )


# ----------------------------------------------------------------------------------------------
# Temporary folders: `.<pin16>.<host>-<pid>.<random>.part` in `$ZOO_HOME/downloads`.


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def part_dir(label: str) -> Path:
    """A new temporary folder in `$ZOO_HOME/downloads`, named so that `clean_stale_parts` can
    tell whether its owner still runs."""
    download_dir().mkdir(parents=True, exist_ok=True)
    prefix = f".{label[:16]}.{_host()}-{os.getpid()}."
    return Path(tempfile.mkdtemp(dir=download_dir(), prefix=prefix, suffix=_PART))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_parts(*, now: float | None = None) -> list[Path]:
    """Remove temporary download folders left by interrupted downloads: those of a process of
    this host that no longer runs, and any older than a day.

    **Returns:** the folders removed.
    """
    root = download_dir()
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    host = _host()
    removed = []
    for entry in root.iterdir():
        if not (entry.name.startswith(".") and entry.name.endswith(_PART)):
            continue
        fields = entry.name.split(".")
        owner = fields[2] if len(fields) > 3 else ""
        who, _, pid = owner.rpartition("-")
        dead = who == host and pid.isdigit() and not _pid_alive(int(pid))
        try:
            old = now - entry.lstat().st_mtime > _STALE_S
        except FileNotFoundError:
            continue
        if dead or old:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def discard_cached(folder: Path, why: str) -> None:
    """Remove a damaged download-cache folder, with a `DamagedCacheWarning` saying which and
    why, so that the next call fetches it again."""
    shutil.rmtree(folder, ignore_errors=True)
    warnings.warn(
        f"removed the damaged download cache {folder} ({why}); fetching it again",
        DamagedCacheWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------------------------------------
# Folders.


def fetch_folder(url: str, *, limits: Limits | None = None) -> tuple[Path, str, bool]:
    """The local copy of the weights folder at `url` (`<base>#sha256=<hex of card.json>`),
    downloading it into `$ZOO_HOME/downloads/<sha256>/` unless it is there already.

    **Returns:** `(folder, pin, fresh)`: `fresh` when it was downloaded by this call (a cached
    folder is verified again by whoever loads it, and discarded if it fails).

    **Raises:** `ValueError` for a bad URL, `OfflineError` if a network download is needed
    while `ZOO_OFFLINE=1`, `DownloadError` (`DownloadLimitError`) if a file cannot be fetched
    within its limits, `ChecksumMismatchError` / `TruncatedWeightsError` / `WeightsError` for
    files that are not the ones pinned.
    """
    where = parse_url(url)
    target = download_dir() / where.pin
    if target.is_dir():
        if (target / CARD_FILE).is_file():
            return target, where.pin, False
        discard_cached(target, f"it has no {CARD_FILE}")
    scheme = urllib.parse.urlsplit(where.base).scheme
    if scheme in _NETWORK_SCHEMES and offline():
        raise OfflineError(
            f"ZOO_OFFLINE is set, so {where.base} cannot be downloaded; unset ZOO_OFFLINE, or "
            f"download its {CARD_FILE}, {CONFIG_FILE} and {WEIGHTS_FILE} into a folder and "
            f"pass that folder as a pathlib.Path"
        )
    limits = Limits.from_env() if limits is None else limits
    clean_stale_parts()
    tmp = part_dir(where.pin)
    try:
        # The card first: it is small, the pin checks it, and it states every other size.
        card_url = where.file_url(CARD_FILE)
        fetch(card_url, tmp / CARD_FILE, limit=limits.max_json_bytes, deadline_s=limits.deadline_s)
        card_bytes = (tmp / CARD_FILE).read_bytes()
        check_pin(card_bytes, where.pin, card_url)
        try:
            data = json.loads(card_bytes)
        except (ValueError, UnicodeDecodeError) as e:
            raise WeightsError(f"{card_url} is not valid JSON: {e}") from None
        card = ModelCard.from_json(data, source=card_url)
        if not card.files:
            raise WeightsError(
                f"{card_url} lists no files with their SHA-256 (it was written by zoo 0.1), so "
                f"the pin does not cover config.json and golden.npz; nothing was cached"
            )
        for name, entry in card.files.items():
            file_url = where.file_url(name)
            limit = entry["size"]
            if name.endswith(".json") and limit > limits.max_json_bytes:
                raise DownloadLimitError(
                    f"{card_url} states {limit:,} bytes for {name}, more than the "
                    f"{limits.max_json_bytes:,} allowed (${MAX_JSON_ENV}); nothing was cached"
                )
            fetch(file_url, tmp / name, limit=limit, deadline_s=limits.deadline_s)
            verify_bytes((tmp / name).read_bytes(), entry, file_url, card_url)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process cached the same folder meanwhile; it is verified on load.
            if not (target / CARD_FILE).is_file():
                raise
        fsync_dir(download_dir())
    except (ChecksumMismatchError, TruncatedWeightsError) as e:
        if "nothing was cached" in str(e):
            raise
        raise type(e)(f"{e}; nothing was cached") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return target, where.pin, True
