"""zoo.data.load: where it looks, what it downloads, what it refuses, and the real data."""

import dataclasses
import gzip
import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from _idx_server import IdxServer, idx_bytes, idx_gz, tiny_split, write_split

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the decompressed Fashion-MNIST files (the same for every mirror and for Debian).
FASHION_SHA256 = {
    "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty `$ZOO_DATA`, with HOME and XDG_CACHE_HOME moved too, and no decoded cache."""
    from zoo.data import _sources

    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _sources._decode.cache_clear()
    return tmp_path / "cache"


@pytest.fixture
def server():
    with IdxServer() as s:
        yield s


@pytest.fixture
def tiny(server):
    """12 training examples, published on the server at /good/."""
    images, labels = tiny_split(12, seed=0)
    blobs = dict(zip(TRAIN_FILES, (idx_gz(images), idx_gz(labels))))
    for file, blob in blobs.items():
        server.files["/good/" + file] = ("ok", blob)
    return images, labels, blobs


def use_mirrors(monkeypatch, mirrors, blobs, **changes):
    """Point "mnist" at `mirrors`, with the MD5s of `blobs` and no operating-system copy."""
    from zoo.data import _sources

    md5 = {file: hashlib.md5(blob).hexdigest() for file, blob in blobs.items()}
    info = dataclasses.replace(
        _sources.DATASETS["mnist"], mirrors=tuple(mirrors), md5=md5, system_dirs=(), **changes
    )
    monkeypatch.setitem(_sources.DATASETS, "mnist", info)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_then_cached(cache, server, tiny, monkeypatch):
    import zoo.data
    from zoo.data import _sources

    images, labels, blobs = tiny
    use_mirrors(monkeypatch, [server.url("/good/")], blobs)
    x, y, names = zoo.data.load("mnist", "train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert x.dtype == y.dtype == np.uint8
    assert names == tuple("0123456789")
    assert sorted(os.listdir(cache / "mnist")) == sorted(TRAIN_FILES)  # no temporary left
    assert server.hits == ["/good/" + f for f in TRAIN_FILES]

    _sources._decode.cache_clear()  # read the files again, from the cache folder
    x2, _, _ = zoo.data.load("mnist", "train")
    np.testing.assert_array_equal(x2, images)
    assert len(server.hits) == 2


def test_download_without_tqdm(cache, server, tiny, monkeypatch, capsys):
    """tqdm is an optional extra: without it a download says so in one line instead."""
    import sys

    import zoo.data

    images, _, blobs = tiny
    use_mirrors(monkeypatch, [server.url("/good/")], blobs)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    x, _, _ = zoo.data.load("mnist", "train")
    np.testing.assert_array_equal(x, images)
    assert "zoo.data: downloading train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_download_into_data_dir(cache, server, tiny, tmp_path, monkeypatch):
    import zoo.data

    images, _, blobs = tiny
    use_mirrors(monkeypatch, [server.url("/good/")], blobs)
    x, _, _ = zoo.data.load("mnist", "train", data_dir=tmp_path / "mine")
    np.testing.assert_array_equal(x, images)
    assert sorted(os.listdir(tmp_path / "mine" / "mnist")) == sorted(TRAIN_FILES)
    assert not (cache / "mnist").exists()


def test_checksum_mismatch_refused(cache, server, tiny, monkeypatch):
    import zoo.data

    _, _, blobs = tiny
    wrong = dict(blobs, **{TRAIN_FILES[0]: b"something else"})
    use_mirrors(monkeypatch, [server.url("/good/")], wrong)
    with pytest.raises(zoo.data.DatasetNotFoundError) as info:
        zoo.data.load("mnist", "train")
    message = str(info.value)
    assert f"{server.url('/good/')}{TRAIN_FILES[0]}: MD5" in message
    assert hashlib.md5(b"something else").hexdigest() in message
    assert list((cache / "mnist").iterdir()) == []  # neither the file nor a temporary


def test_404_and_truncated_fall_through(cache, server, tiny, monkeypatch):
    import zoo.data

    images, labels, blobs = tiny
    for file, blob in blobs.items():
        server.files["/cut/" + file] = ("truncate", blob)
    mirrors = [server.url("/missing/"), server.url("/cut/"), server.url("/good/")]
    use_mirrors(monkeypatch, mirrors, blobs)
    x, y, _ = zoo.data.load("mnist", "train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert server.hits == [f"/{m}/{f}" for f in TRAIN_FILES for m in ("missing", "cut", "good")]
    assert sorted(os.listdir(cache / "mnist")) == sorted(TRAIN_FILES)


def test_all_mirrors_fail_names_every_url(cache, server, tiny, tmp_path, monkeypatch):
    import zoo.data

    _, _, blobs = tiny
    for file, blob in blobs.items():
        server.files["/cut/" + file] = ("truncate", blob)
    refused = closed_port_url()
    use_mirrors(monkeypatch, [server.url("/missing/"), server.url("/cut/"), refused], blobs)
    with pytest.raises(zoo.data.DatasetNotFoundError) as info:
        zoo.data.load("mnist", "train", data_dir=tmp_path / "mine")
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    images_file = TRAIN_FILES[0]
    assert f"could not find {', '.join(TRAIN_FILES)}" in message
    assert f"{server.url('/missing/')}{images_file}: HTTP 404" in message
    assert f"{server.url('/cut/')}{images_file}: connection closed after" in message
    assert f"{refused}{images_file}: [Errno 111] Connection refused" in message
    assert f"{tmp_path / 'mine' / 'mnist'}/ (data_dir)" in message
    assert f"{cache / 'mnist'}/ ($ZOO_DATA)" in message
    assert "--data-dir" in message
    # Once the images failed on every mirror, the labels are not tried.
    assert not any("labels" in hit for hit in server.hits)
    assert not any(p.is_file() for p in tmp_path.rglob("*") if "mine" in p.parts)


def test_offline_error_names_files_and_places(cache, tmp_path, monkeypatch):
    import zoo.data
    from zoo.data import _sources

    nowhere = tmp_path / "no-debian"
    info = dataclasses.replace(_sources.DATASETS["fashion-mnist"], system_dirs=(str(nowhere),))
    monkeypatch.setitem(_sources.DATASETS, "fashion-mnist", info)
    with pytest.raises(zoo.data.DatasetNotFoundError) as e:
        zoo.data.load("fashion-mnist", "test", data_dir=tmp_path / "d", download=False)
    message = str(e.value)
    for expected in [
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
        f"{tmp_path / 'd' / 'fashion-mnist'}/ (data_dir)",
        f"{cache / 'fashion-mnist'}/ ($ZOO_DATA)",
        f"{nowhere}/ (operating-system package)",
        "download=False",
        "pass download=True",
        "--data-dir",
        "apt-get install dataset-fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
    ]:
        assert expected in message, expected


def test_search_order_and_partial_download(cache, server, tiny, tmp_path, monkeypatch):
    """data_dir before $ZOO_DATA; a folder with one file of a split is passed over, never
    mixed with another; an interrupted download (a published file alone) is completed."""
    import zoo.data

    images, labels, blobs = tiny
    use_mirrors(monkeypatch, [server.url("/good/")], blobs)
    other_images, other_labels = tiny_split(12, seed=1)
    write_split(cache / "mnist", "train", other_images, other_labels)
    mine = tmp_path / "mine" / "mnist"
    mine.mkdir(parents=True)
    (mine / TRAIN_FILES[0]).write_bytes(blobs[TRAIN_FILES[0]])
    with pytest.warns(UserWarning, match=f"{mine}/ holds train-images.* not train-labels"):
        x, y, _ = zoo.data.load("mnist", "train", data_dir=tmp_path / "mine")
    np.testing.assert_array_equal(x, other_images)  # both from $ZOO_DATA
    np.testing.assert_array_equal(y, other_labels)
    assert server.hits == []

    (cache / "mnist" / TRAIN_FILES[1]).unlink()
    _, y, _ = zoo.data.load("mnist", "train", data_dir=tmp_path / "mine")
    np.testing.assert_array_equal(y, labels)
    assert server.hits == ["/good/" + TRAIN_FILES[1]]
    assert (mine / TRAIN_FILES[1]).is_file()


def test_data_root(tmp_path, monkeypatch):
    import zoo.data

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert zoo.data.data_root() == tmp_path / "home" / ".cache" / "zoo" / "datasets"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.data.data_root() == tmp_path / "xdg" / "zoo" / "datasets"
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zd"))
    assert zoo.data.data_root() == tmp_path / "zd"


def test_bad_name_and_split(cache):
    import zoo.data

    with pytest.raises(ValueError, match="unknown dataset name 'cifar'"):
        zoo.data.load("cifar", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        zoo.data.load("mnist", "valid")


def _corrupt(kind: str) -> tuple[int, bytes, str]:
    """(which train file to replace, its bytes, what the error must say)."""
    images, labels = tiny_split(12, seed=2)
    raw = idx_bytes(images)
    if kind == "bad magic":
        return 0, gzip.compress(b"\x01\x02" + raw[2:]), "bad IDX magic number"
    if kind == "element type":
        return 0, idx_gz(images, type_code=0x0D), "element type 0x0d (float32)"
    if kind == "dimensions":
        return 0, idx_gz(images.reshape(12, 784)), "2 dimensions, expected 3"
    if kind == "image shape":
        return 0, idx_gz(images.reshape(12, 14, 56)), "expected (28, 28)"
    if kind == "truncated":
        return 0, gzip.compress(raw[:-100]), "truncated"
    if kind == "trailing bytes":
        return 0, gzip.compress(raw + b"\0"), "trailing bytes"
    if kind == "bad gzip":
        return 0, b"this is not gzip", "not a valid gzip stream"
    if kind == "cut gzip":
        return 0, gzip.compress(raw)[:-50], "not a valid gzip stream"
    if kind == "label range":
        return 1, idx_gz(np.where(np.arange(12) == 5, 10, labels).astype(np.uint8)), "label 10"
    if kind == "count mismatch":
        return 1, idx_gz(labels[:11]), "holds 12 images but"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "bad magic",
        "element type",
        "dimensions",
        "image shape",
        "truncated",
        "trailing bytes",
        "bad gzip",
        "cut gzip",
        "label range",
        "count mismatch",
    ],
)
def test_corrupt_local_file(cache, tmp_path, kind):
    import zoo.data

    folder = tmp_path / "d" / "mnist"
    write_split(folder, "train", *tiny_split(12, seed=2))
    which, blob, problem = _corrupt(kind)
    bad = folder / TRAIN_FILES[which]
    bad.write_bytes(blob)
    with pytest.raises(zoo.data.CorruptDatasetError) as e:
        zoo.data.load("mnist", "train", data_dir=tmp_path / "d", download=False)
    assert isinstance(e.value, ValueError)
    assert str(bad) in str(e.value)
    assert problem in str(e.value)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
@pytest.mark.parametrize("split, n", [("train", 60_000), ("test", 10_000)])
def test_real_fashion_mnist(cache, split, n):
    import zoo.data

    images, labels, names = zoo.data.load("fashion-mnist", split, download=False)
    assert images.shape == (n, 28, 28) and labels.shape == (n,)
    assert images.dtype == labels.dtype == np.uint8
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10
    # Every class equally often (Fashion-MNIST is balanced).
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, n // 10))
    prefix = "train" if split == "train" else "t10k"
    for array, kind, ndim in [(images, "images", 3), (labels, "labels", 1)]:
        content = gzip.decompress((DEBIAN / f"{prefix}-{kind}-idx{ndim}-ubyte.gz").read_bytes())
        assert hashlib.sha256(content).hexdigest() == FASHION_SHA256[f"{prefix}-{kind}"]
        # The decoded array is exactly the hashed content after its header.
        assert len(content) - array.nbytes == 4 + 4 * ndim
        assert content.endswith(array.tobytes())
