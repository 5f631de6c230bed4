"""Throughput of `zoo.data.batches` on Fashion-MNIST against a plain NumPy loop.

Run `python -m benchmarks.pipeline` (add `--quick` for a one-epoch smoke run). Both loops
shuffle the 60,000 training images each epoch, gather batches of 100, scale them to float32
in [0, 1] and cast the labels to int32, in the same process, so their ratio is what the Grain
machinery costs. The target is 500,000 images/s on a 2-core machine. It also times decoding
the training set and Grain's `ReadOptions` choices, which is how `DEFAULT_READ_OPTIONS` was
picked.
"""

import argparse
import time

import grain
import numpy as np

import zoo.data
from zoo.data import _sources

BATCH = 100
TARGET = 500_000


def _pipeline_rate(images, labels, epochs: int, read_options: grain.ReadOptions | None) -> float:
    ds = zoo.data.batches(
        {"image": images, "label": labels},
        BATCH,
        seed=0,
        num_epochs=epochs,
        normalize="unit",
        read_options=read_options,
    )
    start = time.perf_counter()
    count = 0
    for batch in ds:
        count += len(batch["label"])
    return count / (time.perf_counter() - start)


def _numpy_rate(images, labels, epochs: int) -> float:
    start = time.perf_counter()
    count = 0
    for epoch in range(epochs):
        order = np.random.default_rng((0, epoch)).permutation(len(images))
        for step in range(len(images) // BATCH):
            i = order[step * BATCH : (step + 1) * BATCH]
            # The same per-batch work as the pipeline: one gather and one fused divide.
            x = np.divide(images[i], np.float32(255), dtype=np.float32)
            y = labels[i].astype(np.int32)
            count += min(len(x), len(y))
    return count / (time.perf_counter() - start)


def run(quick: bool = False) -> dict:
    """Measure the pipeline and the NumPy loop; print a summary.

    **Arguments:**

    - `quick`: one epoch and one repeat per measurement instead of three and three.

    **Returns:** a dict of the numbers: `images_per_s` (best of the repeats, default read
    options), `numpy_images_per_s`, `ratio`, `decode_s` (decoding the training set from its
    gzipped IDX files), `read_options` (images/s for each setting tried) and `target`.
    """
    _sources._decode.cache_clear()
    start = time.perf_counter()
    images, labels, _ = zoo.data.load("fashion-mnist", "train")
    decode_s = time.perf_counter() - start

    epochs, repeats = (1, 1) if quick else (3, 3)
    # Interleave the two so that load from other processes hits both alike; keep the best.
    pipeline, numpy_loop = [], []
    for _ in range(repeats):
        numpy_loop.append(_numpy_rate(images, labels, epochs))
        pipeline.append(_pipeline_rate(images, labels, epochs, None))
    options = {
        "num_threads=0, prefetch=0 (default)": max(pipeline),
        "num_threads=1, prefetch=4": _pipeline_rate(
            images, labels, epochs, grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)
        ),
        "num_threads=2, prefetch=8": _pipeline_rate(
            images, labels, epochs, grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)
        ),
        # Grain's own defaults are slow enough that one epoch shows it.
        "num_threads=16, prefetch=500 (Grain's)": _pipeline_rate(
            images, labels, 1, grain.ReadOptions()
        ),
    }
    result = {
        "images_per_s": max(pipeline),
        "numpy_images_per_s": max(numpy_loop),
        "ratio": max(pipeline) / max(numpy_loop),
        "decode_s": decode_s,
        "read_options": options,
        "target": TARGET,
    }
    print(f"decode Fashion-MNIST train: {decode_s:.3f} s")
    print(f"zoo.data.batches: {result['images_per_s']:,.0f} images/s (target {TARGET:,})")
    print(f"NumPy loop:       {result['numpy_images_per_s']:,.0f} images/s")
    print(f"ratio:            {result['ratio']:.2f}")
    for name, rate in options.items():
        print(f"  ReadOptions({name}): {rate:,.0f} images/s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zoo.data.batches against a NumPy loop")
    parser.add_argument("--quick", action="store_true", help="one epoch, one repeat")
    run(parser.parse_args().quick)
