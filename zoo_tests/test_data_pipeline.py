"""zoo.data.batches: epochs, seeds, resuming, sharding and normalisation."""

import itertools
import json
import sys
from typing import Any

import grain
import numpy as np
import pytest

N = 103  # not a multiple of the batch sizes below, so the remainder matters


def make_data(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, 4, 4), dtype=np.uint8),
        "label": rng.integers(0, 10, n, dtype=np.uint8),
        "id": np.arange(n, dtype=np.int64),
    }


def ids(batches) -> list[np.ndarray]:
    return [b["id"] for b in batches]


def at(ds, i: int) -> dict[str, np.ndarray]:
    batch = ds[i]
    assert batch is not None
    return batch


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_every_example_once_per_epoch(drop_remainder):
    import zoo.data

    ds = zoo.data.batches(
        make_data(),
        10,
        seed=3,
        num_epochs=3,
        drop_remainder=drop_remainder,
        shard_count=1,
        shard_index=0,
    )
    steps = zoo.data.steps_per_epoch(N, 10, drop_remainder)
    assert steps == (10 if drop_remainder else 11)
    assert len(ds) == 3 * steps
    got = ids(ds)
    assert len(got) == 3 * steps
    sizes = [len(b) for b in got[:steps]]
    assert sizes == [10] * 10 + ([] if drop_remainder else [3])
    epochs = [np.concatenate(got[e * steps : (e + 1) * steps]) for e in range(3)]
    for epoch in epochs:
        assert len(np.unique(epoch)) == len(epoch)  # no example twice
        if not drop_remainder:
            np.testing.assert_array_equal(np.sort(epoch), np.arange(N))
    # Each epoch has its own order (and, when dropping, its own dropped examples).
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_batch_contents_and_dtypes():
    import zoo.data

    data = make_data()
    batch = at(zoo.data.batches(data, 8, seed=0, shard_index=0, shard_count=1), 5)
    i = batch["id"]
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 4, 4)
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    assert batch["id"].dtype == np.int64
    np.testing.assert_array_equal(batch["image"], data["image"][i].astype(np.float32) / 255)
    np.testing.assert_array_equal(batch["label"], data["label"][i])

    raw = zoo.data.batches(
        data, 8, seed=0, normalize=None, shuffle=False, shard_count=1, shard_index=0
    )
    np.testing.assert_array_equal(at(raw, 1)["image"], data["image"][8:16])
    assert at(raw, 1)["image"].dtype == np.uint8


def test_standard_normalisation():
    import zoo.data

    data = make_data()
    ds = zoo.data.batches(data, N, seed=0, normalize="standard", shard_index=0, shard_count=1)
    images = at(ds, 0)["image"]
    assert images.dtype == np.float32
    assert abs(float(images.mean())) < 1e-5
    assert abs(float(images.std()) - 1) < 1e-5
    given = at(
        zoo.data.batches(
            data,
            8,
            seed=0,
            normalize="standard",
            mean=100.0,
            std=50.0,
            shard_index=0,
            shard_count=1,
        ),
        2,
    )
    np.testing.assert_allclose(
        given["image"], (data["image"][given["id"]] - 100.0) / 50.0, rtol=1e-5
    )


def test_same_seed_same_orders():
    import zoo.data

    def run(seed):
        ds = zoo.data.batches(
            make_data(), 10, seed=seed, num_epochs=2, shard_index=0, shard_count=1
        )
        return np.concatenate(ids(ds))

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_no_shuffle_keeps_order():
    import zoo.data

    ds = zoo.data.batches(
        make_data(),
        10,
        seed=0,
        shuffle=False,
        num_epochs=2,
        drop_remainder=False,
        shard_index=0,
        shard_count=1,
    )
    np.testing.assert_array_equal(np.concatenate(ids(ds)), np.tile(np.arange(N), 2))


def test_endless():
    import zoo.data

    ds = zoo.data.batches(make_data(), 10, seed=1, shard_index=0, shard_count=1)
    assert len(ds) == sys.maxsize
    first = list(itertools.islice(iter(ds), 25))
    finite = list(
        zoo.data.batches(make_data(), 10, seed=1, num_epochs=3, shard_index=0, shard_count=1)
    )
    for a, b in zip(first, finite[:25], strict=True):
        np.testing.assert_array_equal(a["id"], b["id"])


@pytest.mark.parametrize("stop", [0, 4, 10, 13])  # start, mid-epoch, epoch boundary, epoch 2
def test_resume_from_state(stop):
    import zoo.data

    def build():
        return zoo.data.batches(make_data(), 10, seed=5, num_epochs=3, shard_index=0, shard_count=1)

    expected = ids(build())
    it = iter(build())
    seen = [next(it)["id"] for _ in range(stop)]
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    resumed = iter(build())
    resumed.set_state(state)
    rest = ids(resumed)
    assert len(seen) + len(rest) == len(expected)
    for a, b in zip(seen + rest, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_two_shards_split_every_global_batch(drop_remainder):
    import zoo.data

    kwargs: dict[str, Any] = dict(seed=2, num_epochs=2, drop_remainder=drop_remainder)
    full = ids(zoo.data.batches(make_data(), 10, shard_index=0, shard_count=1, **kwargs))
    shards = [
        ids(zoo.data.batches(make_data(), 10, shard_index=k, shard_count=2, **kwargs))
        for k in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(full)
    for whole, a, b in zip(full, *shards, strict=True):
        assert not set(a.tolist()) & set(b.tolist())
        np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    assert all(len(a) == 5 for a in shards[0][:10])


def test_default_shard_is_this_process():
    import jax

    import zoo.data

    assert (jax.process_index(), jax.process_count()) == (0, 1)
    a = at(zoo.data.batches(make_data(), 10, seed=0), 3)["id"]
    b = at(zoo.data.batches(make_data(), 10, seed=0, shard_index=0, shard_count=1), 3)["id"]
    np.testing.assert_array_equal(a, b)


def test_read_options_do_not_change_batches():
    import zoo.data

    def run(read_options):
        ds = zoo.data.batches(
            make_data(),
            10,
            seed=4,
            num_epochs=2,
            read_options=read_options,
            shard_index=0,
            shard_count=1,
        )
        return np.concatenate(ids(ds))

    np.testing.assert_array_equal(
        run(None), run(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size must be at least 1"),
        (dict(batch_size=200), "larger than the 103 examples"),
        (dict(batch_size=10, shard_count=3, shard_index=0), "divisible by shard_count=3"),
        (dict(batch_size=10, shard_count=2, shard_index=2), "shard_index < shard_count"),
        (dict(batch_size=10, shard_index=1), "both shard_index and shard_count"),
        (dict(batch_size=10, seed=-1), "seed must be non-negative"),
        (dict(batch_size=10, num_epochs=0), "num_epochs must be at least 1"),
        (dict(batch_size=10, normalize="minmax"), "normalize must be"),
        (dict(batch_size=10, mean=0.5), "apply to normalize='standard', not 'auto'"),
    ],
)
def test_bad_arguments(kwargs, match):
    import zoo.data

    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        zoo.data.batches(make_data(), **kwargs)


def test_bad_data():
    import zoo.data

    with pytest.raises(ValueError, match="share a non-zero leading length"):
        zoo.data.batches({"image": np.zeros((5, 2)), "label": np.zeros(4)}, 2, seed=0)
    with pytest.raises(ValueError, match="pass normalize=None"):
        zoo.data.batches({"x": np.zeros((5, 2))}, 2, seed=0)
    ds = zoo.data.batches({"x": np.zeros((5, 2))}, 2, seed=0, normalize=None)
    assert at(ds, 0)["x"].shape == (2, 2)
