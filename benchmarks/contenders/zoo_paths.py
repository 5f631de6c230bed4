"""zoo's two contenders: the default path the recipes use, and a plain `filter_jit` loop.

- `ZooDefault`: exactly what the recipes run: `zoo.train.fit` with a `zoo.train.TrainStep`
  and the recipe's `steps_per_dispatch` K (K optimiser steps per compiled call, a
  `lax.scan`; K=1 calls the single step). Every measurement goes through `fit` itself,
  including its host-side work: stacking K host batches, copying them to the device, reading
  the losses back one dispatch behind. For the OU task, as in the recipe, `fit` gets no data
  and every batch is generated inside the compiled step from the train state's key.
- `ZooFilterJit`: what a user writes by hand with zoo's models and losses: one
  `eqx.filter_jit` call per step, `eqx.filter_value_and_grad`, optax.
"""

from collections.abc import Iterable, Sequence

import equinox as eqx
import jax
import numpy as np
import optax

import zoo.train

from . import _workloads as W
from ._base import Contender, JaxPerStep


class ZooDefault(Contender):
    """`zoo.train.fit`, K steps per dispatch (see the module docstring).

    Only `fit`'s public arguments are used. Its steady state therefore reads host batches,
    where the one-call-per-step contenders get theirs already on the device: the copy is
    charged to zoo alone.
    """

    key = "zoo"

    def __init__(
        self,
        workload: W.Workload,
        model,
        model_state,
        train_key,
        *,
        steps_per_dispatch: int | None = None,
    ):
        self.k = steps_per_dispatch or workload.steps_per_dispatch
        self.label = f"zoo default (fit, K={self.k})"
        self.generated = workload.name == "gru"
        optimizer = optax.adam(workload.learning_rate)
        self.step = zoo.train.TrainStep(
            W.zoo_loss(workload.name),
            optimizer,
            make_batch=W.ou_make_batch if self.generated else None,
        )
        self.state = zoo.train.init_train_state(
            model, optimizer, key=train_key, model_state=model_state
        )
        self._loaded: list[W.Batch] = []

    def _fit(self, batches: Iterable[W.Batch], n: int, log_every: int | None = None) -> list:
        if n % self.k:
            raise ValueError(f"{n} steps is not a multiple of K={self.k}")
        # Generated data: the batches are not read, the step makes the same ones itself.
        self.state, history = zoo.train.fit(
            self.state,
            self.step,
            None if self.generated else batches,
            num_epochs=1,
            steps_per_epoch=n,
            steps_per_dispatch=self.k,
            log_every=log_every,
            progress=False,
        )
        jax.block_until_ready(self.state)
        return history

    def losses(self, batches: Sequence[W.Batch]) -> np.ndarray:
        history = self._fit(batches, len(batches), log_every=1)
        return np.array([r["loss"] for r in history if r["kind"] == "step"])

    def load(self, batches: Sequence[W.Batch]) -> None:
        self._loaded = list(batches)

    def run(self) -> None:
        self._fit(self._loaded, len(self._loaded))

    def epoch(self, batches: Iterable[W.Batch], n: int) -> None:
        self._fit(batches, n)


class ZooFilterJit(JaxPerStep):
    """One `eqx.filter_jit` call per optimiser step, with zoo's model and loss."""

    key = "zoo_jit"
    label = "zoo, eqx.filter_jit per step"

    def __init__(self, workload: W.Workload, model, model_state, train_key):
        del train_key  # no randomness in these models' training steps
        optimizer = optax.adam(workload.learning_rate)
        loss_fn = W.zoo_loss(workload.name)

        @eqx.filter_jit
        def step(model, model_state, opt_state, batch):
            def loss(m):
                # No key: these models use none, and a key would be split per example.
                value, (new_state, _) = loss_fn(m, model_state, batch, None)  # pyright: ignore
                return value, new_state

            (value, model_state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
            params = eqx.filter(model, eqx.is_inexact_array)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return eqx.apply_updates(model, updates), model_state, opt_state, value

        self._step = step
        self.state = (model, model_state, optimizer.init(eqx.filter(model, eqx.is_inexact_array)))

    def step(self, batch) -> jax.Array:
        model, model_state, opt_state, loss = self._step(*self.state, batch)
        self.state = (model, model_state, opt_state)
        return loss
