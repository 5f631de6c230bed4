"""What every contender offers the timing loop in `benchmarks.run`."""

import abc
from collections.abc import Iterable, Sequence

import numpy as np

from ._workloads import Batch


class Contender(abc.ABC):
    """A way of training one workload: it owns its model, optimiser state and step.

    The timing loop calls `losses` first (step-0 check and compilation), then `load` once and
    `run` repeatedly (steady state), then `epoch` (data included). Every method leaves the
    training state updated, and `run` and `epoch` return only once all their work is done:
    they block on the result once, at the end, never per step.
    """

    #: Short key (JSON, ratio tables) and the label shown in the tables.
    key: str = ""
    label: str = ""

    @abc.abstractmethod
    def losses(self, batches: Sequence[Batch]) -> np.ndarray:
        """Train on `batches` (host arrays) and return each step's loss, shape `(len,)`."""

    @abc.abstractmethod
    def load(self, batches: Sequence[Batch]) -> None:
        """Keep `batches` where the step reads them (the device), for `run`; untimed."""

    @abc.abstractmethod
    def run(self) -> None:
        """Train one step on each loaded batch, then wait for the last to finish."""

    @abc.abstractmethod
    def epoch(self, batches: Iterable[Batch], n: int) -> None:
        """Train on the first `n` host batches of `batches` as they come, then wait."""


class PerStep(Contender):
    """A contender that makes one call per optimiser step (everyone but zoo's default).

    Subclasses give `step(batch) -> loss` (may return before the work is done), `sync()`
    (wait for all of it) and, where it differs from the host batch, `to_device(batch)`.
    """

    _loaded: list = []

    def to_device(self, batch: Batch):
        return batch

    @abc.abstractmethod
    def step(self, batch) -> object:
        """One optimiser step; returns the loss (a lazy array or tensor)."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Wait until the parameters after the last step are computed."""

    def losses(self, batches: Sequence[Batch]) -> np.ndarray:
        out = [float(self.step(self.to_device(b))) for b in batches]  # type: ignore[arg-type]
        self.sync()
        return np.asarray(out)

    def load(self, batches: Sequence[Batch]) -> None:
        self._loaded = [self.to_device(b) for b in batches]
        self.sync()

    def run(self) -> None:
        for b in self._loaded:
            self.step(b)
        self.sync()

    def epoch(self, batches: Iterable[Batch], n: int) -> None:
        # The host batch goes straight to the step, as a user's loop would pass it; JAX
        # copies it to the device on the call, torch wraps the NumPy buffer.
        for i, b in enumerate(batches):
            if i == n:
                break
            self.step(self.epoch_input(b))
        self.sync()

    def epoch_input(self, batch: Batch):
        return batch


class JaxPerStep(PerStep):
    """A JAX contender that makes one call per step and keeps its training state in
    `self.state` (a PyTree): batches go to the device first, `sync` waits on the state."""

    state: object = None

    def to_device(self, batch: Batch):
        import jax

        return jax.device_put(batch)

    def sync(self) -> None:
        import jax

        jax.block_until_ready(self.state)
