"""Fault injection for zoo.data: mixed data locations, offline mode, gzip bombs and damaged
IDX streams. Servers listen on 127.0.0.1 only; every loop is bounded in count, and the
decoding tests in memory."""

import dataclasses
import gzip
import hashlib
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from _idx_server import IdxServer, idx_bytes, idx_gz, tiny_split, write_split

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty `$ZOO_DATA`, HOME and XDG_CACHE_HOME moved, online, no decoded cache."""
    from zoo.data import _sources

    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    _sources._decode.cache_clear()
    return tmp_path / "cache"


@pytest.fixture
def server():
    with IdxServer() as s:
        yield s


def _point_mnist(monkeypatch, *, mirrors=(), blobs=None, system_dirs=()):
    from zoo.data import _sources

    changes: dict = {"mirrors": tuple(mirrors), "system_dirs": tuple(map(str, system_dirs))}
    if blobs is not None:
        changes["md5"] = {file: hashlib.md5(blob).hexdigest() for file, blob in blobs.items()}
    info = dataclasses.replace(_sources.DATASETS["mnist"], **changes)
    monkeypatch.setitem(_sources.DATASETS, "mnist", info)


# ------------------------------------------------------------------ mixed data locations


def test_images_here_labels_there_are_never_paired(cache, tmp_path, monkeypatch):
    """The issue's case: images in data_dir, labels only in the system copy. The old code
    paired data_dir's images with the system labels (10% of pairs right)."""
    import zoo.data

    system = tmp_path / "system"
    sys_images, sys_labels = tiny_split(12, seed=3)
    write_split(system, "train", sys_images, sys_labels)
    _point_mnist(monkeypatch, system_dirs=[system])
    my_images, _ = tiny_split(12, seed=4)
    mine = tmp_path / "mine" / "mnist"
    mine.mkdir(parents=True)
    (mine / TRAIN_FILES[0]).write_bytes(idx_gz(my_images))

    with pytest.warns(UserWarning) as caught:
        x, y, _ = zoo.data.load("mnist", "train", data_dir=tmp_path / "mine", download=False)
    np.testing.assert_array_equal(x, sys_images)
    np.testing.assert_array_equal(y, sys_labels)
    message = "\n".join(str(w.message) for w in caught)
    assert f"{mine}/ holds {TRAIN_FILES[0]} but not {TRAIN_FILES[1]}" in message
    assert f"both files come from {system}/" in message


def test_halves_in_two_folders_are_an_error(cache, tmp_path, monkeypatch):
    """Images only in data_dir, labels only in $ZOO_DATA: no folder holds the split."""
    import zoo.data

    _point_mnist(monkeypatch)
    images, labels = tiny_split(12, seed=5)
    write_split(tmp_path / "mine" / "mnist", "train", images, labels)
    write_split(cache / "mnist", "train", images, labels)
    (tmp_path / "mine" / "mnist" / TRAIN_FILES[1]).unlink()
    (cache / "mnist" / TRAIN_FILES[0]).unlink()
    with pytest.raises(zoo.data.DatasetNotFoundError) as e:
        zoo.data.load("mnist", "train", data_dir=tmp_path / "mine", download=False)
    message = str(e.value)
    assert "together in one folder" in message
    assert f"{tmp_path / 'mine' / 'mnist'}/ (data_dir): has {TRAIN_FILES[0]} but not" in message
    assert f"{cache / 'mnist'}/ ($ZOO_DATA): has {TRAIN_FILES[1]} but not" in message


def test_foreign_half_is_not_completed_by_a_download(cache, server, tmp_path, monkeypatch):
    """A file in the download folder that is not the published one is not paired with the
    mirror's other file; nothing is fetched and the error names the file."""
    import zoo.data

    images, labels = tiny_split(12, seed=6)
    blobs = dict(zip(TRAIN_FILES, (idx_gz(images), idx_gz(labels))))
    for file, blob in blobs.items():
        server.files["/m/" + file] = ("ok", blob)
    _point_mnist(monkeypatch, mirrors=[server.url("/m/")], blobs=blobs)
    mine = tmp_path / "mine" / "mnist"
    mine.mkdir(parents=True)
    (mine / TRAIN_FILES[0]).write_bytes(idx_gz(tiny_split(12, seed=7)[0]))
    with pytest.raises(zoo.data.DatasetNotFoundError, match="is not the published file"):
        zoo.data.load("mnist", "train", data_dir=tmp_path / "mine")
    assert server.hits == []
    assert not (mine / TRAIN_FILES[1]).exists()


# ---------------------------------------------------------------------------- offline mode


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_stops_dataset_downloads(cache, server, tmp_path, monkeypatch, value):
    import zoo.data

    images, labels = tiny_split(12, seed=8)
    blobs = dict(zip(TRAIN_FILES, (idx_gz(images), idx_gz(labels))))
    for file, blob in blobs.items():
        server.files["/m/" + file] = ("ok", blob)
    _point_mnist(monkeypatch, mirrors=[server.url("/m/")], blobs=blobs)
    monkeypatch.setenv("ZOO_OFFLINE", value)
    with pytest.raises(zoo.data.DatasetNotFoundError) as e:
        zoo.data.load("mnist", "train")
    assert server.hits == []
    assert not list(cache.rglob("*.gz"))
    message = str(e.value)
    for expected in [
        "mnist: could not find",
        f"{cache / 'mnist'}/ ($ZOO_DATA)",
        "$ZOO_OFFLINE is set",
        "--data-dir",
        server.url("/m/") + TRAIN_FILES[0],
    ]:
        assert expected in message, expected

    # A local copy still loads offline.
    write_split(cache / "mnist", "train", images, labels)
    x, y, _ = zoo.data.load("mnist", "train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert server.hits == []


def test_offline_off_values_still_download(cache, server, monkeypatch):
    import zoo.data

    images, labels = tiny_split(12, seed=9)
    blobs = dict(zip(TRAIN_FILES, (idx_gz(images), idx_gz(labels))))
    for file, blob in blobs.items():
        server.files["/m/" + file] = ("ok", blob)
    _point_mnist(monkeypatch, mirrors=[server.url("/m/")], blobs=blobs)
    monkeypatch.setenv("ZOO_OFFLINE", "0")
    x, _, _ = zoo.data.load("mnist", "train")
    np.testing.assert_array_equal(x, images)
    assert len(server.hits) == 2


# ---------------------------------------------------------------------- gzip bombs, damage


def _bomb(path: Path, shape: tuple[int, ...], zeros: int) -> None:
    """A gzip file: an IDX header for `shape`, then `zeros` zero bytes, compressed in
    bounded chunks (the test never holds the inflated size in memory)."""
    header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(z.compress(header))
        for _ in range(zeros // len(chunk)):  # bounded: zeros / 1 MiB iterations
            f.write(z.compress(chunk))
        f.write(z.flush())


def _peak_bytes(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as e:  # the error is the result under test
            out = e
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def test_gzip_bomb_stops_at_header_size(tmp_path):
    """A ~250 KB file inflating to 256 MiB behind a header for 12 images: refused after the
    header's 9,424 bytes, with memory bounded (the old code inflated all of it)."""
    from zoo.data import CorruptDatasetError
    from zoo.data._idx import read_idx

    path = tmp_path / "bomb.gz"
    _bomb(path, (12, 28, 28), 256 << 20)
    assert path.stat().st_size < 400_000
    error, peak = _peak_bytes(lambda: read_idx(path, 3))
    assert isinstance(error, CorruptDatasetError)
    assert str(path) in str(error) and "trailing bytes" in str(error)
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_header_larger_than_file_can_hold(tmp_path):
    """A header declaring 4e9 x 28 x 28 bytes in a tiny file: refused before any allocation."""
    from zoo.data import CorruptDatasetError
    from zoo.data._idx import read_idx

    path = tmp_path / "huge.gz"
    _bomb(path, (4_000_000_000, 28, 28), 0)
    error, peak = _peak_bytes(lambda: read_idx(path, 3))
    assert isinstance(error, CorruptDatasetError)
    assert str(path) in str(error) and "truncated" in str(error)
    assert peak < 4 << 20


@pytest.mark.parametrize("members", [1, 3])
def test_round_trip_and_concatenated_members(tmp_path, members):
    """Valid files decode exactly, also as several concatenated gzip members (which
    `gzip.decompress` accepts), and the array is read-only."""
    from zoo.data._idx import read_idx

    images, _ = tiny_split(7, seed=10)
    raw = idx_bytes(images)
    cuts = np.linspace(0, len(raw), members + 1).astype(int)
    blob = b"".join(gzip.compress(raw[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    path = tmp_path / "x.gz"
    path.write_bytes(blob)
    x = read_idx(path, 3)
    np.testing.assert_array_equal(x, images)
    assert x.dtype == np.uint8 and not x.flags.writeable


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("crc", "not a valid gzip stream"),
        ("short", "truncated"),
        ("extra", "trailing bytes"),
        ("garbage member", "not a valid gzip stream"),
        ("empty", "too short"),
    ],
)
def test_damaged_streams_name_the_file(tmp_path, damage, problem):
    from zoo.data import CorruptDatasetError
    from zoo.data._idx import read_idx

    images, _ = tiny_split(5, seed=11)
    raw = idx_bytes(images)
    blob = gzip.compress(raw, mtime=0)
    if damage == "crc":  # flip a bit of the stored CRC-32 (the trailer's first 4 bytes)
        blob = blob[:-8] + bytes([blob[-8] ^ 1]) + blob[-7:]
    elif damage == "short":
        blob = gzip.compress(raw[:-1], mtime=0)
    elif damage == "extra":
        blob = blob + gzip.compress(b"\0")
    elif damage == "garbage member":
        blob = blob + b"not gzip at all"
    elif damage == "empty":
        blob = b""
    path = tmp_path / f"{damage}.gz"
    path.write_bytes(blob)
    with pytest.raises(CorruptDatasetError) as e:
        read_idx(path, 3)
    assert str(path) in str(e.value) and problem in str(e.value)


def test_real_file_decodes_like_gzip(tmp_path):
    """On a full-size file (47 MB inflated when Debian's copy is installed, else a
    synthetic 60,000 images) the result equals `gzip.decompress`'s bytes."""
    from zoo.data._idx import read_idx

    debian = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if debian.is_file():
        path = debian
    else:
        path = tmp_path / "big.gz"
        rng = np.random.default_rng(0)
        path.write_bytes(idx_gz(rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8)))
    expected = gzip.decompress(path.read_bytes())
    x = read_idx(path, 3)
    assert x.shape == (60_000, 28, 28)
    assert x.tobytes() == expected[16:]


# ------------------------------------------------------------------ what a recipe user sees


def test_recipe_reports_a_corrupt_dataset_in_one_line(cache, tmp_path, capsys, monkeypatch):
    """A damaged IDX file used to end `zoo train mnist_mlp` in a CorruptDatasetError
    traceback; now one line naming the file and what to do, status 2, no run folder."""
    from recipes import mnist_mlp

    for name in ("ZOO_COORDINATOR", "ZOO_NUM_PROCESSES", "ZOO_PROCESS_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "d" / "fashion-mnist"
    write_split(folder, "train", *tiny_split(12, seed=12))
    bad = folder / TRAIN_FILES[0]
    bad.write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    workdir = tmp_path / "run"
    argv = ["--data-dir", str(tmp_path / "d"), "--no-download", "--workdir", str(workdir)]
    assert mnist_mlp.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(bad) in err[0] and "bad IDX magic number" in err[0]
    assert "delete the file" in err[0]
    assert not workdir.exists()
