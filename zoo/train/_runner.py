"""`Runner`: the hot loop's view of a train state, and `to_device`, where data enters."""

import jax
from jax.sharding import Mesh

from ._loss import Batch, Metrics
from ._parallel import data_mesh, global_batch, replicate
from ._state import TrainState
from ._step import Partition, TrainStep


def to_device(batch: Batch, mesh: Mesh | None = None, *, stacked: bool = False) -> Batch:
    """Put a host batch (NumPy arrays) on the devices: the one place data enters them.

    **Arguments:**

    - `batch`: this process's part of the batch, a dict of host arrays.
    - `mesh`: `None` for the default device; a mesh from [`zoo.train.data_mesh`][] to split
      the global batch along its `"data"` axis ([`zoo.train.global_batch`][]).
    - `stacked`: the arrays hold K stacked batches `(K, batch, ...)`.

    **Returns:** a dict of `jax.Array`s.
    """
    if mesh is None:
        return jax.device_put(dict(batch))
    return global_batch(batch, mesh, stacked=stacked)


class Runner:
    """A train state held as its array leaves, partitioned once, stepped by compiled calls.

    This is the loop behind [`zoo.train.fit`][], for code that drives training itself (a
    benchmark, a custom loop). The train state is split once into its array leaves and its
    static half ([`zoo.train.TrainStep`][]'s compiled functions are cached per static half);
    each call passes the leaves straight to a cached `jax.jit` function and donates their
    buffers, so a step costs `jax.jit`'s C++ dispatch, re-partitions nothing and keeps one
    copy of the state. `scan` runs K steps in one call (`lax.scan` over K stacked batches).

    !!! example

        ```python
        runner = zoo.train.Runner(step, train_state)
        for batches in stacked_batches:       # dicts of arrays, leading axes (K, batch)
            metrics = runner.scan(batches)    # metrics: one value per step, shape (K,)
        train_state = runner.state()
        ```

    The `train_state` passed in stays valid: the runner starts from a replicated copy.
    """

    def __init__(self, step: TrainStep, train_state: TrainState, mesh: Mesh | None = None):
        """**Arguments:**

        - `step`: the [`zoo.train.TrainStep`][] (loss and optimiser).
        - `train_state`: the [`zoo.train.TrainState`][] to start from.
        - `mesh`: the data-parallel mesh (from [`zoo.train.data_mesh`][]); every visible
          device by default.
        """
        self.step = step
        self.mesh = data_mesh() if mesh is None else mesh
        self.batch_size: int | None = None  # global, of the last batch placed
        self.partition, leaves = Partition.split(train_state)
        # Replicated copies, because the first dispatch donates these buffers and the caller
        # may still hold `train_state`. (`device_put` copies without compiling.)
        self.leaves = replicate(leaves, self.mesh)

    def state(self) -> TrainState:
        """The current [`zoo.train.TrainState`][] (its arrays are the runner's: read them,
        or copy them, before the next call donates them)."""
        return self.partition.merge(self.leaves)

    def single(self, batch: Batch) -> Metrics:
        """One optimiser step on one host batch; **returns** its metrics (scalars)."""
        fn = self.step.compiled("single", self.partition, donate=True, mesh=self.mesh)
        device_batch = to_device(batch, self.mesh)
        self.batch_size = jax.tree.leaves(device_batch)[0].shape[0]
        self.leaves, metrics = fn(self.leaves, device_batch)
        return metrics

    def scan(self, batches: Batch) -> Metrics:
        """K optimiser steps on K stacked host batches (leading axes `(K, batch)`) in one
        compiled call; **returns** metrics of shape `(K,)`."""
        fn = self.step.compiled("scan", self.partition, donate=True, mesh=self.mesh)
        device_batches = to_device(batches, self.mesh, stacked=True)
        self.batch_size = jax.tree.leaves(device_batches)[0].shape[1]
        self.leaves, metrics = fn(self.leaves, device_batches)
        return metrics

    def generated(self, num_steps: int) -> Metrics:
        """`num_steps` steps on batches made by the step's `make_batch` inside the compiled
        call; **returns** metrics of shape `(num_steps,)`."""
        fn = self.step.compiled(
            "generated", self.partition, num_steps=num_steps, donate=True, mesh=self.mesh
        )
        self.leaves, metrics = fn(self.leaves)
        return metrics
