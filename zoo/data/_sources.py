"""MNIST-style image datasets: find them on disk or download them, then decode."""

import contextlib
import dataclasses
import functools
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
from jaxtyping import UInt8

from .._atomic import atomic_open
from .._paths import offline, zoo_home
from ._idx import CorruptDatasetError, read_idx


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset's files was found or could be downloaded."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Where one MNIST-style dataset lives and how to check it.

    Replace an entry of `DATASETS` (e.g. `dataclasses.replace(info, mirrors=...)`) to point
    at another mirror.
    """

    files: dict[str, tuple[str, str]]  # split -> (images file, labels file)
    md5: dict[str, str]  # file -> MD5 of the published .gz
    mirrors: tuple[str, ...]  # base URLs, tried in order; each ends with "/"
    system_dirs: tuple[str, ...]  # folders an operating-system package installs
    system_package: str | None  # that package's name, for the error message
    class_names: tuple[str, ...]


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        files=_MNIST_FILES,
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        system_dirs=(),
        system_package=None,
        class_names=tuple(str(digit) for digit in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        files=_MNIST_FILES,
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # Debian's `dataset-fashion-mnist` (re-compressed: other MD5s, the same content).
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        system_package="dataset-fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}

_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


def data_root() -> Path:
    """The folder that holds downloaded datasets, one subfolder per dataset.

    **Returns:** `$ZOO_DATA` if set, else `datasets/` in zoo's folder (`$ZOO_HOME`, else
    `$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`). Read on every call, so it follows the
    environment.
    """
    if root := os.environ.get("ZOO_DATA"):
        return Path(root).expanduser()
    return zoo_home() / "datasets"


class _DownloadError(Exception):
    """A response that arrived but is not the file: cut short, or the wrong checksum."""


def _download(url: str, dest: Path, md5: str) -> None:
    """Stream `url` through `zoo._atomic.atomic_open` into `dest`, checking its MD5 before
    the rename, so `dest` is either absent or verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(dest, "wb") as f:
        digest = hashlib.md5()
        received = 0
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:
            expected = r.length
            with _progress(expected, dest.name) as advance:
                while chunk := r.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
        # http.client ends a body cut short silently when reading in chunks.
        if expected is not None and received < expected:
            raise _DownloadError(f"connection closed after {received} of {expected} bytes")
        if (got := digest.hexdigest()) != md5:
            raise _DownloadError(f"MD5 {got} does not match the expected {md5}")


@contextlib.contextmanager
def _progress(total: int | None, name: str):
    """Yield a callback that advances a tqdm bar, or does nothing when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(f"zoo.data: downloading {name}", file=sys.stderr)
        yield lambda n: None
        return
    with tqdm(total=total, desc=name, unit="B", unit_scale=True, leave=False) as bar:
        yield bar.update


@functools.lru_cache(maxsize=8)
def _decode(path: str, ndim: int, mtime_ns: int, size: int) -> np.ndarray:
    # Keyed on (mtime, size) so a replaced file is decoded again; the arrays are read-only,
    # so sharing them between callers is safe.
    del mtime_ns, size
    return read_idx(path, ndim)


def _read(path: Path, ndim: int) -> np.ndarray:
    stat = path.stat()
    return _decode(str(path), ndim, stat.st_mtime_ns, stat.st_size)


def _why(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{e.reason}"
    if isinstance(e, _DownloadError):
        return f"{e}"
    return f"{type(e).__name__}: {e}"


def _download_any(info: DatasetInfo, file: str, folder: Path, attempts: list[str]) -> Path | None:
    """Try each mirror in turn; append why each failed to `attempts`."""
    for base in info.mirrors:
        url = base + file
        try:
            _download(url, folder / file, info.md5[file])
        except (OSError, http.client.HTTPException, _DownloadError) as e:
            # URLError and timeouts are OSErrors; HTTPExceptions are malformed responses.
            attempts.append(f"{url}: {_why(e)}")
        else:
            return folder / file
    return None


def load(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[UInt8[np.ndarray, "n 28 28"], UInt8[np.ndarray, " n"], tuple[str, ...]]:
    """Load an MNIST-style dataset split, finding or downloading its files.

    Both files of the split (images and labels) are taken from the first of these that
    holds both: `data_dir/<name>/`, then `$ZOO_DATA/<name>/` (see `data_root`), then an
    operating-system copy (Debian's `dataset-fashion-mnist` installs
    `/usr/share/datasets/fashion-mnist/`). A folder holding only one of them is never mixed
    with another folder's: it is passed over with a warning naming it. Failing all of them,
    the files are downloaded from the dataset's mirrors into `data_dir/<name>/` (or
    `$ZOO_DATA/<name>/`), each verified against its published MD5; a file already there
    is kept only if it is the published one. `$ZOO_OFFLINE=1` forbids the download, as it
    does for weights. Decoded arrays are cached for the process.

    **Arguments:**

    - `name`: `"mnist"` or `"fashion-mnist"`.
    - `split`: `"train"` (60,000 examples) or `"test"` (10,000).
    - `data_dir`: a folder searched first, holding one subfolder per dataset.
    - `download`: whether to try the mirrors when no local copy exists.

    **Returns:** `(images, labels, class_names)`: read-only uint8 arrays of shapes
    `(n, 28, 28)` and `(n,)` with labels in `0..9`, and the ten class names.

    **Raises:**

    - `ValueError`: for an unknown `name` or `split`.
    - `DatasetNotFoundError`: when no folder holds both files and they cannot be
      downloaded (`download=False`, `$ZOO_OFFLINE`, every mirror failed, or the download
      folder holds a file that is not the published one); the message names the files,
      every folder searched and what it holds, every URL tried and why it failed, and how
      to provide the files.
    - `CorruptDatasetError`: when a file found is not a valid IDX file, naming it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; choose from {sorted(DATASETS)}")
    info = DATASETS[name]
    if split not in info.files:
        raise ValueError(f"unknown split {split!r} for {name}; choose from {sorted(info.files)}")

    places: list[tuple[Path, str]] = []
    if data_dir is not None:
        places.append((Path(data_dir).expanduser() / name, "data_dir"))
    places.append((data_root() / name, "$ZOO_DATA" if os.environ.get("ZOO_DATA") else "cache"))
    places.extend((Path(d), "operating-system package") for d in info.system_dirs)
    target = places[0][0]
    files = info.files[split]

    # Both files of a split come from one place: images from one copy paired with labels
    # from another would be silently wrong. A place holding only one of them is passed
    # over, with a warning, for the first place that holds both.
    folder: Path | None = None
    partial: list[tuple[Path, list[str], list[str]]] = []  # (folder, present, absent)
    for place, _ in places:
        present = [file for file in files if (place / file).is_file()]
        if len(present) == len(files):
            folder = place
            break
        if present:
            partial.append((place, present, [f for f in files if f not in present]))
    if folder is not None:
        for place, present, absent in partial:
            warnings.warn(
                f"zoo.data.load({name!r}, {split!r}): {place}/ holds {', '.join(present)} but "
                f"not {', '.join(absent)}, so it is not used: both files come from {folder}/ "
                "instead (add the missing file, or remove the other, to silence this)",
                stacklevel=2,
            )
    else:
        folder = _fetch(name, info, files, places, target, partial, download)

    images_file, labels_file = (folder / file for file in files)
    images = _read(images_file, ndim=3)
    labels = _read(labels_file, ndim=1)
    if images.shape[1:] != (28, 28):
        raise CorruptDatasetError(
            f"{images_file}: images of shape {images.shape[1:]}, expected (28, 28)"
        )
    if len(images) != len(labels):
        raise CorruptDatasetError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels"
        )
    if len(labels) and (top := int(labels.max())) > 9:
        raise CorruptDatasetError(f"{labels_file}: label {top} is outside 0..9")
    return images, labels, info.class_names


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _fetch(
    name: str,
    info: DatasetInfo,
    files: tuple[str, str],
    places: list[tuple[Path, str]],
    target: Path,
    partial: list[tuple[Path, list[str], list[str]]],
    download: bool,
) -> Path:
    """Download the split's files into `target`, or raise `DatasetNotFoundError`.

    A file already in `target` is kept only if it is the published one (its MD5 matches):
    the download then completes an interrupted one rather than pairing someone's own file
    with the mirror's other half."""
    why_not: str | None = None
    if not download:
        why_not = "Did not download (download=False)."
    elif offline():
        why_not = "Did not download: $ZOO_OFFLINE is set (unset it to allow downloads)."
    present = next((have for place, have, _ in partial if place == target), [])
    foreign = [file for file in present if _md5(target / file) != info.md5.get(file)]
    if why_not is None and foreign:
        why_not = (
            f"Did not download the rest into {target}/: its {', '.join(foreign)} is not the "
            "published file, and would be paired with a downloaded one."
        )
    attempts: list[str] = []
    if why_not is None:
        for file in files:
            if file in present:
                continue
            if _download_any(info, file, target, attempts) is None:
                # After one file failed on every mirror, the next would fail the same way.
                break
        else:
            return target
    missing = [file for file in files if not (target / file).is_file()] if why_not is None else []
    raise DatasetNotFoundError(
        _not_found_message(name, info, list(files), places, partial, attempts, why_not, missing)
    )


def _not_found_message(
    name: str,
    info: DatasetInfo,
    files: list[str],
    places: list[tuple[Path, str]],
    partial: list[tuple[Path, list[str], list[str]]],
    attempts: list[str],
    why_not: str | None,
    missing: list[str],
) -> str:
    lines = [f"{name}: could not find {', '.join(files)} together in one folder.", "Looked in:"]
    halves = {place: (have, lack) for place, have, lack in partial}
    for folder, why in places:
        line = f"  {folder}/ ({why})"
        if folder in halves:
            have, lack = halves[folder]
            line += f": has {', '.join(have)} but not {', '.join(lack)}"
        lines.append(line)
    if why_not is not None:
        lines.append(why_not)
    elif attempts:
        lines.append("Tried to download:")
        lines += [f"  {attempt}" for attempt in attempts]
    else:
        lines.append("No mirror to download from.")
    lines += [
        "To fix, any of:",
        f"  - put both files in DIR/{name}/ and pass data_dir=DIR (--data-dir DIR), or put "
        f"them in {data_root() / name}/ (set $ZOO_DATA to move that folder);",
    ]
    if info.system_package:
        lines.append(f"  - on Debian or Ubuntu: apt-get install {info.system_package};")
    how = "fetch" if why_not is None else "allow downloads, or fetch"
    if "download=False" in (why_not or ""):
        how = "pass download=True, or fetch"
    lines.append(f"  - {how} them by hand from:")
    lines += [f"      {base}{file}" for base in info.mirrors for file in (missing or files)]
    return "\n".join(lines)
