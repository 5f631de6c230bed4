"""Your own data: float inputs through `zoo.data.batches` unchanged, caller-named entries,
and `.npz` files / in-memory arrays checked as carefully as the IDX datasets."""

import zipfile

import numpy as np
import pytest


def _batch(ds, i=0):
    batch = ds[i]
    assert batch is not None
    return batch


def _signals(n=50, length=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, length)).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_float_and_signed_inputs_pass_unchanged_by_default(dtype):
    import zoo.data

    x, y = _signals()
    x = (x * 100).astype(dtype)
    ds = zoo.data.batches({"image": x, "label": y}, 10, seed=0, shuffle=False, num_epochs=1)
    batch = _batch(ds, 2)
    # Bit for bit: the MNIST-1D failure was a silent / 255 of already standardised floats.
    assert batch["image"].dtype == x.dtype
    np.testing.assert_array_equal(batch["image"], x[20:30])
    np.testing.assert_array_equal(batch["label"], y[20:30])
    assert batch["label"].dtype == np.int32


def test_unsigned_inputs_are_scaled_to_unit_by_default():
    import zoo.data

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (20, 3, 3), dtype=np.uint8)
    batch = _batch(zoo.data.batches({"image": x}, 5, seed=0, shuffle=False))
    assert batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["image"], x[:5].astype(np.float32) / 255)


def test_explicit_normalisation_applies_to_floats_as_asked():
    import zoo.data

    x, y = _signals()
    data = {"image": x, "label": y}
    unit = _batch(zoo.data.batches(data, 10, seed=0, shuffle=False, normalize="unit"))
    np.testing.assert_array_equal(unit["image"], x[:10] / np.float32(255))
    std = _batch(
        zoo.data.batches(data, 10, seed=0, shuffle=False, normalize="standard", mean=0.5, std=2.0)
    )
    np.testing.assert_allclose(std["image"], (x[:10] - 0.5) / 2.0, rtol=1e-6)


def test_per_channel_standardisation_matches_numpy():
    import zoo.data
    import zoo.hub

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)
    mean, std = (100.0, 120.0, 140.0), (50.0, 60.0, 70.0)
    batch = _batch(
        zoo.data.batches(
            {"image": x}, 12, seed=0, shuffle=False, normalize="standard", mean=mean, std=std
        )
    )
    want = (x.astype(np.float64) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(batch["image"], want, rtol=1e-6)
    # The hub's Preprocess computes the same, bit for bit, then moves channels first.
    pre = zoo.hub.Preprocess(layout="chw", normalize="standard", mean=mean, std=std, channels=3)
    out = pre(x)
    assert out.shape == (12, 3, 4, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.moveaxis(batch["image"], -1, 1))
    with pytest.raises(ValueError, match="3 channels on their last axis"):
        pre(x[..., :2])
    with pytest.raises(ValueError, match="per-channel `mean`"):
        zoo.data.batches(
            {"image": x[..., :2]}, 4, seed=0, normalize="standard", mean=mean, std=std
        )[0]


def test_preprocess_for_signals_and_auto():
    import zoo.hub

    x, _ = _signals(6)
    np.testing.assert_array_equal(zoo.hub.Preprocess(layout="chw", normalize="auto")(x), x[:, None])
    np.testing.assert_array_equal(zoo.hub.Preprocess(layout="flat", normalize=None)(x), x)
    card = zoo.ModelCard(name="mlp_mnist.x", preprocess=zoo.hub.Preprocess(mean=(1.0,), channels=1))
    again = zoo.ModelCard.from_json(card.to_json())
    assert again.preprocess == card.preprocess


def test_caller_named_entries():
    import zoo.data

    x, y = _signals()
    ds = zoo.data.batches({"x": x, "y": y}, 10, seed=0, input_key="x", label_key="y", shuffle=False)
    batch = _batch(ds)
    np.testing.assert_array_equal(batch["x"], x[:10])
    assert batch["y"].dtype == np.int32
    # The trap of the issue: {"x", "y"} with the defaults names the missing key.
    with pytest.raises(ValueError, match=r"no 'image'.*\['x', 'y'\].*input_key="):
        zoo.data.batches({"x": x, "y": y}, 10, seed=0)
    with pytest.raises(ValueError, match=r"no 'signal' \(input_key='signal'\)"):
        zoo.data.batches({"x": x, "y": y}, 10, seed=0, input_key="signal")
    with pytest.raises(ValueError, match=r"label_key='target' is not an entry"):
        zoo.data.batches({"x": x, "y": y}, 10, seed=0, input_key="x", label_key="target")


# ---------------------------------------------------------------- .npz and arrays


def test_load_npz_round_trip(tmp_path):
    import zoo.data

    x, y = _signals(30)
    xt, yt = _signals(8, seed=1)
    path = tmp_path / "signals.npz"
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)
    got_x, got_y = zoo.data.load_npz(path, "train")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    got_xt, got_yt = zoo.data.load_npz(str(path), "test")
    np.testing.assert_array_equal(got_xt, xt)
    np.testing.assert_array_equal(got_yt, yt)


def _bad_npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, split, match",
    [
        (dict(x=np.zeros((4, 2)), y=np.zeros(4, int)), "test", r"no array 'x_test'.*holds x, y"),
        (dict(x=np.zeros((4, 2)), y=np.zeros(3, int)), "train", "4 inputs but 3 labels"),
        (dict(x=np.zeros((4, 2)), y=np.zeros(4)), "train", "integer class indices.*float64"),
        (dict(x=np.zeros((4, 2)), y=np.zeros((4, 1), int)), "train", r"shape \(examples,\)"),
        (dict(x=np.array([[0.0, np.nan]] * 4), y=np.zeros(4, int)), "train", "non-finite"),
        (dict(x=np.zeros((4, 2)), y=-np.ones(4, int)), "train", "label -1 is negative"),
        (dict(x=np.zeros((4, 2), bool), y=np.zeros(4, int)), "train", "integers or floats"),
        (dict(x=np.zeros((0, 2)), y=np.zeros(0, int)), "train", "at least one example"),
    ],
)
def test_load_npz_errors_name_the_problem(tmp_path, arrays, split, match):
    import zoo.data

    path = _bad_npz(tmp_path, "bad.npz", **arrays)
    with pytest.raises(zoo.data.InvalidDatasetError, match=match) as info:
        zoo.data.load_npz(path, split)
    assert "bad.npz" in str(info.value)


def test_load_npz_refuses_pickles_and_non_archives(tmp_path):
    import zoo.data

    objects = np.empty(4, dtype=object)
    objects[:] = [{"a": 1}] * 4
    path = _bad_npz(tmp_path, "pickled.npz", x=objects, y=np.zeros(4, int))
    with pytest.raises(zoo.data.InvalidDatasetError, match=r"'x' cannot be read.*pickle"):
        zoo.data.load_npz(path)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(zoo.data.InvalidDatasetError, match="not a .npz archive"):
        zoo.data.load_npz(tmp_path / "one.npy")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(zoo.data.InvalidDatasetError, match="not a readable .npz"):
        zoo.data.load_npz(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(zoo.data.InvalidDatasetError, match="holds nothing"):
        zoo.data.load_npz(tmp_path / "empty.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        zoo.data.load_npz(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="unknown split"):
        zoo.data.load_npz(tmp_path / "missing.npz", "valid")


def test_check_arrays_accepts_images_and_signals():
    import zoo.data

    x, y = _signals()
    assert zoo.data.check_arrays(x, y)[0] is x
    images = np.zeros((5, 28, 28), np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    zoo.data.check_arrays(images, labels)
    with pytest.raises(zoo.data.InvalidDatasetError, match="mine: 5 inputs but 4 labels"):
        zoo.data.check_arrays(images, labels[:4], source="mine")
