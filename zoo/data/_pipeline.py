"""A Grain pipeline over in-memory arrays: one whole batch per index read."""

import math
import sys
from collections.abc import Mapping

import grain
import jax
import numpy as np

from ._normalize import NORMALIZE_MODES, Stat, check_stat, normalize as normalize_inputs

# In-memory gathers hold the GIL for a few microseconds each, so reader threads only add
# contention: reading in the calling thread was fastest on a 2-core machine (see
# `benchmarks/pipeline.py`); Grain's defaults (16 threads, 500 prefetch) were ~4x slower.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def steps_per_epoch(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """The number of batches in one pass over `n` examples.

    **Arguments:**

    - `n`: the number of examples.
    - `batch_size`: the (global) batch size.
    - `drop_remainder`: whether a last, smaller batch is dropped.

    **Returns:** `n // batch_size` when dropping the remainder, else `ceil(n / batch_size)`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return n // batch_size if drop_remainder else math.ceil(n / batch_size)


class _ArrayBatches(grain.MapDataset):
    """Element `i` is the `i`-th batch (over all epochs) of a dict of equal-length arrays."""

    def __init__(
        self,
        data: dict[str, np.ndarray],
        batch_size: int,
        *,
        seed: int,
        num_epochs: int | None,
        shuffle: bool,
        drop_remainder: bool,
        normalize: str | None,
        mean: Stat,
        std: Stat,
        inputs: str,
        labels: str | None,
        shard_index: int,
        shard_count: int,
        read_options: grain.ReadOptions,
    ):
        super().__init__()
        self._data = data
        self._n = len(next(iter(data.values())))
        self._batch_size = batch_size
        self._seed = seed
        self._num_epochs = num_epochs
        self._shuffle = shuffle
        self._steps = steps_per_epoch(self._n, batch_size, drop_remainder)
        self._normalize = normalize
        self._mean = mean
        self._std = std
        self._inputs = inputs
        self._labels = labels
        self._shard_index = shard_index
        self._shard_count = shard_count
        self._read_options = read_options
        # (epoch, order): a permutation costs ~0.5 ms, a batch ~50 us, so compute it once per
        # epoch. One tuple is swapped atomically, so reader threads never see a torn pair.
        self._order_cache: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def __len__(self) -> int:
        # Grain's convention for an endless dataset (as `MapDataset.repeat(None)`).
        if self._num_epochs is None:
            return sys.maxsize
        return self._steps * self._num_epochs

    def __str__(self) -> str:
        return (
            f"ArrayBatches(n={self._n}, batch_size={self._batch_size}, seed={self._seed}, "
            f"num_epochs={self._num_epochs}, shard={self._shard_index}/{self._shard_count})"
        )

    def _order(self, epoch: int) -> np.ndarray:
        cached_epoch, order = self._order_cache
        if cached_epoch != epoch:
            if self._shuffle:
                # Seeded from (seed, epoch) alone, so any epoch's order can be rebuilt directly
                # when resuming, and every process draws the same global order.
                order = np.random.default_rng((self._seed, epoch)).permutation(self._n)
            else:
                order = np.arange(self._n)
            self._order_cache = (epoch, order)
        return order

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        if index < 0:
            raise IndexError(f"batch index must be non-negative, got {index}")
        if self._num_epochs is not None:
            index %= len(self)  # Grain's sources wrap indices past the end the same way.
        epoch, step = divmod(index, self._steps)
        start = step * self._batch_size
        size = min(self._batch_size, self._n - start)
        # Shard `k` of `K` takes the `k`-th of `K` near-equal slices of the global batch.
        lo = start + self._shard_index * size // self._shard_count
        hi = start + (self._shard_index + 1) * size // self._shard_count
        indices = self._order(epoch)[lo:hi]
        batch = {}
        for name, array in self._data.items():
            values = array[indices]  # one fancy-index gather per array, never per record
            if name == self._inputs and self._normalize is not None:
                values = normalize_inputs(values, self._normalize, self._mean, self._std)
            elif name == self._labels and np.issubdtype(values.dtype, np.integer):
                values = values.astype(np.int32)
            batch[name] = values
        return batch

    def __iter__(self) -> grain.DatasetIterator:
        return self.to_iter_dataset(self._read_options).__iter__()


def batches(
    data: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    seed: int,
    num_epochs: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    normalize: str | None = "auto",
    mean: Stat | None = None,
    std: Stat | None = None,
    input_key: str | None = None,
    label_key: str | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    read_options: grain.ReadOptions | None = None,
) -> grain.MapDataset:
    """A Grain dataset of shuffled, normalised batches of in-memory arrays.

    Element `i` is the `i`-th batch, a dict with the keys of `data` and a leading batch axis.
    Each epoch visits every example once (at most `batch_size - 1` dropped with
    `drop_remainder`) in an order drawn from `(seed, epoch)`: a new order each epoch, the same
    orders for the same seed. The inputs entry (`input_key`, default `"image"`) is scaled per
    `normalize`: by default only unsigned-integer inputs (raw pixels) are divided by 255, and
    float inputs pass unchanged; integer labels (`label_key`, default `"label"`) become int32;
    other entries keep their dtype and values.

    Iterate with `iter(ds)`: the iterator's `get_state()` is a small JSON-serialisable dict, and
    `set_state(state)` on the iterator of an identically built dataset resumes with exactly the
    batches that would have followed. Further `.map(...)`s return plain Grain datasets whose
    `iter` uses Grain's default `ReadOptions`; call `.to_iter_dataset(DEFAULT_READ_OPTIONS)`
    on those.

    **Arguments:**

    - `data`: arrays sharing their leading axis (the examples), e.g. `{"image": uint8 (N, 28,
      28), "label": uint8 (N,)}` or `{"x": float32 (N, 40), "y": int64 (N,)}` (with
      `input_key="x", label_key="y"`). Held by reference, not copied.
    - `batch_size`: the global batch size, summed over all shards.
    - `seed`: a non-negative integer; every process must pass the same one.
    - `num_epochs`: how many passes; `None` repeats forever, and then `len(ds)` is
      `sys.maxsize` (Grain's convention). Use `steps_per_epoch` to count an epoch.
    - `shuffle`: draw a new order each epoch; `False` keeps the data's order.
    - `drop_remainder`: drop the last `n % batch_size` examples of each epoch instead of
      yielding a smaller batch.
    - `normalize`: for the inputs entry: `"auto"` (the default) divides unsigned-integer
      inputs by 255 (to float32 in [0, 1]) and leaves every other dtype unchanged; `"unit"`
      divides by 255 whatever the dtype (asked for explicitly); `"standard"` subtracts
      `mean` and divides by `std` (to float32); `None` leaves the inputs as they are.
    - `mean`, `std`: the statistics for `"standard"`: one number, or one per channel (the
      inputs' last axis); computed once from all of the inputs (over every axis) when not
      given (pass the training set's values when batching a test set).
    - `input_key`: the key of the inputs entry; default `"image"` (the losses of
      `zoo.train` take the same `input_key=` and `label_key=`).
    - `label_key`: the key of the labels entry; default `"label"` when `data` has one.
    - `shard_index`, `shard_count`: this process reads the `shard_index`-th of `shard_count`
      equal slices of every global batch (a kept remainder batch splits into sizes that may
      differ by one). Default to `jax.process_index()` and `jax.process_count()`, read
      here: build the dataset after `jax.distributed.initialize`.
    - `read_options`: Grain's reading threads and prefetch; default `DEFAULT_READ_OPTIONS`.

    **Returns:** a `grain.MapDataset` of `len` batches per epoch times `num_epochs`.

    **Raises:**

    - `ValueError`: for empty or ragged `data`, a `batch_size` that is not positive, larger
      than the data (with `drop_remainder`) or not divisible by `shard_count`, a negative
      `seed`, a bad `num_epochs`, a normalisation without its inputs entry or a named
      `label_key` entry that `data` lacks (naming the key and the entries there are), or bad
      shard arguments.
    """
    if not data:
        raise ValueError("data must hold at least one array")
    arrays = {name: np.asarray(array) for name, array in data.items()}
    lengths = {name: (len(a) if a.ndim else 0) for name, a in arrays.items()}
    n = next(iter(lengths.values()))
    if len(set(lengths.values())) != 1 or n == 0:
        raise ValueError(f"data's arrays must share a non-zero leading length, got {lengths}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if steps_per_epoch(n, batch_size, drop_remainder) == 0:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n} examples with drop_remainder=True"
        )
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1 or None, got {num_epochs}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be 'auto', 'unit', 'standard' or None, got {normalize!r}")
    inputs, labels = input_key, label_key
    input_key = "image" if inputs is None else inputs
    if normalize is not None and input_key not in arrays:
        named = f"input_key={inputs!r}" if inputs is not None else "the default input_key='image'"
        raise ValueError(
            f"batches: normalize={normalize!r} applies to the inputs entry, but data has no "
            f"{input_key!r} ({named}); its entries are {sorted(arrays)}: name the inputs with "
            f"`input_key=` (and the labels with `label_key=`), or pass normalize=None"
        )
    if labels is not None and labels not in arrays:
        raise ValueError(
            f"batches: label_key={labels!r} is not an entry of data; its entries are "
            f"{sorted(arrays)}"
        )
    label_key = labels if labels is not None else ("label" if "label" in arrays else None)
    if normalize != "standard" and (mean is not None or std is not None):
        raise ValueError(f"mean and std apply to normalize='standard', not {normalize!r}")
    if normalize == "standard":
        if mean is None or std is None:
            x = arrays[input_key]
            # float64 accumulation: a float32 sum over ~5e7 pixels loses digits.
            mean = float(x.mean(dtype=np.float64)) if mean is None else mean
            std = float(x.std(dtype=np.float64)) if std is None else std
        mean = check_stat("batches", "mean", mean)
        std = check_stat("batches", "std", std, positive=True)
    if (shard_index is None) != (shard_count is None):
        raise ValueError("pass both shard_index and shard_count, or neither")
    if shard_index is None or shard_count is None:
        shard_index, shard_count = jax.process_index(), jax.process_count()
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(
            f"need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
            f"shard_count={shard_count}"
        )
    if batch_size % shard_count:
        raise ValueError(f"batch_size={batch_size} must be divisible by shard_count={shard_count}")
    return _ArrayBatches(
        arrays,
        batch_size,
        seed=seed,
        num_epochs=num_epochs,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
        normalize=normalize,
        mean=0.0 if mean is None else mean,
        std=1.0 if std is None else std,
        inputs=input_key,
        labels=label_key,
        shard_index=shard_index,
        shard_count=shard_count,
        read_options=DEFAULT_READ_OPTIONS if read_options is None else read_options,
    )
