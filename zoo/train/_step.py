"""One optimiser step, K steps fused with `lax.scan`, and the compiled functions behind them."""

from collections.abc import Callable, Hashable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._loss import Batch, LossFn, Metrics
from ._parallel import batch_sharding, replicated_sharding
from ._state import TrainState
from ._trainable import TrainableSpec, norms_in_inference_mode, resolve_trainable

# Above this many bytes for K generated batches, `scan_generated` makes each step's batch
# inside the step instead of all K before them (the same values either way).
STACKED_GENERATION_BYTES = 64 << 20


def _split_key(key: PRNGKeyArray, _) -> tuple[PRNGKeyArray, tuple[PRNGKeyArray, ...]]:
    """One generated step's keys, `(next state's, make_batch's, the loss's)`, as a scan body."""
    new_key, data_key, loss_key = jr.split(key, 3)
    return new_key, (new_key, data_key, loss_key)


def _draws_alike_under_vmap(key: PRNGKeyArray) -> bool:
    """Whether `jax.random` draws the same bits from `key` under `vmap` as one call at a
    time: threefry (JAX's default) does; rbg and unsafe_rbg do not."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)  # a raw uint32 key: drawn with the default impl
    return str(jr.key_impl(key)) == "threefry2x32"


class Partition:
    """The static half of a train state split into its array leaves and everything else.

    Splitting once and passing only the list of array leaves to a `jax.jit`-compiled function
    keeps the per-call cost near `jax.jit`'s C++ dispatch: `fit` holds the leaves between
    steps and never re-partitions the model, as `eqx.filter_jit` must on every call.
    """

    __slots__ = ("treedef", "mask", "static", "key")

    def __init__(self, leaves: list[Any], treedef: Any):
        self.treedef = treedef
        self.mask = tuple(eqx.is_array(x) for x in leaves)
        self.static = tuple(x for x, m in zip(leaves, self.mask) if not m)
        self.key = (self.treedef, self.mask, self.static)
        try:
            hash(self.key)
        except TypeError as e:
            raise TypeError(
                "every non-array leaf of the train state (activation functions, flags, sizes) "
                f"must be hashable, as for `eqx.filter_jit`: {e}"
            ) from None

    @classmethod
    def split(cls, tree: PyTree) -> tuple["Partition", list[Array]]:
        """`(partition, arrays)`: the static half of `tree` and its array leaves."""
        leaves, treedef = jtu.tree_flatten(tree)
        partition = cls(leaves, treedef)
        return partition, [x for x, m in zip(leaves, partition.mask) if m]

    def merge(self, arrays: list[Array]) -> PyTree:
        """Rebuild the tree from its array leaves."""
        it_arrays, it_static = iter(arrays), iter(self.static)
        leaves = [next(it_arrays) if m else next(it_static) for m in self.mask]
        return jtu.tree_unflatten(self.treedef, leaves)

    def out_leaves(self, tree: PyTree) -> list[Array]:
        """The array leaves of a step's result, checked to have the input's structure."""
        leaves, treedef = jtu.tree_flatten(tree)
        mask = tuple(eqx.is_array(x) for x in leaves)
        if treedef != self.treedef or mask != self.mask:
            raise ValueError(
                "a training step changed the structure of the train state (did the loss "
                "function return a model state of another structure, or `None` for a "
                f"stateful model?): before {self.treedef}, after {treedef}"
            )
        return [x for x, m in zip(leaves, mask) if m]


class TrainStep:
    """An optimiser step for stateless and stateful models alike, one or many per call.

    Gradients come from `eqx.filter_value_and_grad` of the model's trainable arrays: the
    model is split with `eqx.partition` by the train state's filter (see
    [`zoo.train.init_train_state`][]'s `trainable`) before differentiating, so frozen leaves
    cost no gradients and hold no optimiser state. Each
    kind of call compiles one `jax.jit` function over the train state's array leaves, its
    static half (activation functions, sizes) closed over: what `eqx.filter_jit` does, but
    partitioned once per structure, so that `fit`'s loop pays only `jax.jit`'s dispatch. The
    functions are cached on this object: a second call with a train state and batch of the
    same structure, shapes and dtypes does not recompile.

    !!! example

        ```python
        step = zoo.train.TrainStep(zoo.train.classification_loss(), optax.adam(1e-3))
        train_state, metrics = step(train_state, batch)       # one step
        train_state, metrics = step.scan(train_state, batches)  # K steps, leading axis K
        ```
    """

    def __init__(
        self,
        loss_fn: LossFn,
        optimizer: optax.GradientTransformation,
        *,
        make_batch: Callable[[PRNGKeyArray], Batch] | None = None,
        trainable: TrainableSpec = None,
        freeze_norm_stats: bool = False,
    ):
        """**Arguments:**

        - `loss_fn`: `loss_fn(model, model_state, batch, key) -> (loss, (model_state,
          metrics))`; see [`zoo.train.stateless`][] to adapt a simpler one and
          [`zoo.train.classification_loss`][] for a ready-made one.
        - `optimizer`: the optax transformation the train state was initialised with.
        - `make_batch`: for data generated in JAX, `make_batch(key) -> batch`; needed by
          [`zoo.train.TrainStep.scan_generated`][] and by `fit` without a dataset.
        - `trainable`: optional; the filter the train state was built with (see
          [`zoo.train.init_train_state`][]). The train state's own filter is what the step
          uses; given here too, the two are checked to agree, so a step never differentiates
          leaves the optimiser holds no state for.
        - `freeze_norm_stats`: run every BatchNorm layer whose parameters are all frozen in
          inference mode: it normalises with its running statistics and leaves them as they
          are (a frozen backbone, as when fine-tuning on little data).
        """
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.make_batch = make_batch
        self.trainable = trainable
        self.freeze_norm_stats = freeze_norm_stats
        self._compiled: dict[Hashable, Callable] = {}

    # --- pure functions of a TrainState ---------------------------------------------------

    def _mask(self, ts: TrainState) -> PyTree[bool]:
        if self.trainable is not None:
            wanted = resolve_trainable(ts.model, self.trainable)
            every = tuple(eqx.is_inexact_array(x) for x in jtu.tree_leaves(ts.model))
            if (wanted or every) != (ts.trainable or every):
                raise ValueError(
                    "the TrainStep's `trainable` filter differs from the train state's: pass "
                    "the same filter to init_train_state(..., trainable=...)"
                )
        return ts.trainable_mask()

    def _update(
        self, ts: TrainState, batch: Batch, key: PRNGKeyArray, new_key: PRNGKeyArray
    ) -> tuple[TrainState, Metrics]:
        mask = self._mask(ts)
        model = norms_in_inference_mode(ts.model, mask) if self.freeze_norm_stats else ts.model
        # Partition before differentiating: frozen leaves are constants of the loss, so the
        # compiler drops their weight gradients.
        params, frozen = eqx.partition(model, mask)

        def loss_of(params):
            return self.loss_fn(eqx.combine(params, frozen), ts.model_state, batch, key)

        (loss, (model_state, metrics)), grads = eqx.filter_value_and_grad(loss_of, has_aux=True)(
            params
        )
        # optax mixes Python floats with its int32 step counters (Adam's `decay**count`),
        # which strict dtype promotion rejects; the model's own code stays strict.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.optimizer.update(grads, ts.opt_state, params)
        new_model = eqx.apply_updates(ts.model, updates)
        ts = TrainState(new_model, model_state, opt_state, ts.step + 1, new_key, ts.trainable)
        return ts, {"loss": loss, **metrics}

    def _data_step(self, ts: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        new_key, key = jr.split(ts.key)
        return self._update(ts, batch, key, new_key)

    def _generated_step(
        self, ts: TrainState, place: Callable[[Batch], Batch] = lambda b: b
    ) -> tuple[TrainState, Metrics]:
        if self.make_batch is None:
            raise ValueError("this TrainStep has no `make_batch` to generate data with")
        _, (new_key, data_key, key) = _split_key(ts.key, None)
        return self._update(ts, place(self.make_batch(data_key)), key, new_key)

    def _stacked_bytes(self, ts: TrainState, num_steps: int) -> int:
        """The size of `num_steps` generated batches held at once."""
        assert self.make_batch is not None
        shapes = jax.eval_shape(self.make_batch, ts.key)
        return num_steps * sum(x.size * x.dtype.itemsize for x in jtu.tree_leaves(shapes))

    # --- compiled functions over the array leaves -----------------------------------------

    def compiled(
        self,
        kind: str,
        partition: Partition,
        *,
        num_steps: int = 1,
        donate=False,
        mesh: Mesh | None = None,
    ):
        """The compiled function `f(leaves, *args) -> (leaves, metrics)` for `partition`.

        `kind` is `"single"` (args: one batch), `"scan"` (args: K stacked batches) or
        `"generated"` (no args; `num_steps` steps on data from `make_batch`). With `donate`,
        the input leaves' buffers are reused for the output, so they are invalid afterwards.
        With a `mesh` (from [`zoo.train.data_mesh`][]), the function runs data parallel:
        leaves and metrics replicated, batches split along the mesh's `"data"` axis
        (generated ones too, where their batch size divides over the devices).
        """
        cache_key = (kind, num_steps, donate, partition.key, mesh)
        fn = self._compiled.get(cache_key)
        if fn is not None:
            return fn

        def train_step(leaves, batch):
            ts, metrics = self._data_step(partition.merge(leaves), batch)
            return partition.out_leaves(ts), metrics

        def shard_generated(batch: Batch, stacked: bool = False) -> Batch:
            # Each device generates and trains on its slice of the generated batch; with
            # partitionable threefry (JAX's default) the values equal the unsplit ones.
            # `stacked`: K batches `(K, batch, ...)`, split along axis 1.
            if mesh is None:
                return batch
            sharding, size = batch_sharding(mesh, stacked=stacked), mesh.devices.size
            axis = int(stacked)

            def place(x):
                if x.ndim > axis and x.shape[axis] % size == 0:
                    return lax.with_sharding_constraint(x, sharding)
                return x

            return jax.tree.map(place, batch)

        def train_generated_step(leaves, _):
            ts, metrics = self._generated_step(partition.merge(leaves), shard_generated)
            return partition.out_leaves(ts), metrics

        def train_scan(leaves, batches):
            return lax.scan(train_step, leaves, batches)

        def train_generated(leaves):
            ts = partition.merge(leaves)
            if self.make_batch is None:
                raise ValueError("this TrainStep has no `make_batch` to generate data with")
            stacked = self._stacked_bytes(ts, num_steps) <= STACKED_GENERATION_BYTES
            if not (stacked and _draws_alike_under_vmap(ts.key)):
                return lax.scan(train_generated_step, leaves, None, length=num_steps)
            # Every step's batch in one vmapped `make_batch` call before the steps: the same
            # keys, so the same bits, but its random draws (threefry, a rolled loop per call
            # on the CPU) run once per K steps on K times the data.
            _, (new_keys, data_keys, keys) = lax.scan(_split_key, ts.key, None, length=num_steps)
            batches = shard_generated(jax.vmap(self.make_batch)(data_keys), stacked=True)

            def train_step_on(leaves, xs):
                batch, key, new_key = xs
                ts, metrics = self._update(partition.merge(leaves), batch, key, new_key)
                return partition.out_leaves(ts), metrics

            return lax.scan(train_step_on, leaves, (batches, keys, new_keys))

        pure: Callable[..., Any]
        if kind == "single":
            pure = train_step
        elif kind == "scan":
            pure = train_scan
        elif kind == "generated":
            pure = train_generated
        else:
            raise ValueError(f"unknown kind of step {kind!r}")
        donate_argnums = (0,) if donate else ()
        if mesh is None:
            fn = jax.jit(pure, donate_argnums=donate_argnums)
        else:
            # Pinning the shardings keeps the outputs' placement equal to the inputs', so the
            # next call reuses this executable and the donated buffers.
            replicated = replicated_sharding(mesh)
            batch_in = {
                "single": (batch_sharding(mesh),),
                "scan": (batch_sharding(mesh, stacked=True),),
            }.get(kind, ())
            fn = jax.jit(
                pure,
                in_shardings=(replicated, *batch_in),
                out_shardings=(replicated, replicated),
                donate_argnums=donate_argnums,
            )
        self._compiled[cache_key] = fn
        return fn

    # --- public calls ---------------------------------------------------------------------

    def __call__(self, train_state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        """One optimiser step on one batch.

        **Arguments:**

        - `train_state`: the current [`zoo.train.TrainState`][].
        - `batch`: a dict of arrays with a leading batch axis.

        **Returns:** `(train_state, metrics)`: the state after the step and a dict of scalar
        metrics, `"loss"` first.
        """
        partition, leaves = Partition.split(train_state)
        leaves, metrics = self.compiled("single", partition)(leaves, batch)
        return partition.merge(leaves), metrics

    def scan(self, train_state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        """K optimiser steps in one compiled call, `lax.scan` over K stacked batches.

        Equals K calls of the single step, to float tolerance.

        **Arguments:**

        - `train_state`: the current [`zoo.train.TrainState`][].
        - `batches`: a dict of arrays with leading axes `(K, batch, ...)`.

        **Returns:** `(train_state, metrics)`: the state after K steps and a dict of metrics
        with one value per step, shape `(K,)`.
        """
        partition, leaves = Partition.split(train_state)
        leaves, metrics = self.compiled("scan", partition)(leaves, batches)
        return partition.merge(leaves), metrics

    def scan_generated(self, train_state: TrainState, num_steps: int) -> tuple[TrainState, Metrics]:
        """`num_steps` optimiser steps in one compiled call on batches made inside it.

        Each step splits the train state's key into a key for `make_batch(key)`, a key for
        the loss and the next state's key, so data generation (an OU process, say) never
        leaves the device. When the K batches together take at most
        `STACKED_GENERATION_BYTES` (64 MiB) and the key is threefry (JAX's default), they
        are made before the steps by one `jax.vmap(make_batch)` over those same keys: the
        same values, with the random draws of K steps in one call (the OU recipe's step: 612
        -> 532 us). Larger batches are made inside each step, so that memory never holds K
        of them, and so are those of rbg keys, whose draws differ under `vmap`.

        **Arguments:**

        - `train_state`: the current [`zoo.train.TrainState`][].
        - `num_steps`: the number of steps, K; each value compiles once.

        **Returns:** `(train_state, metrics)` with metrics of shape `(num_steps,)`.

        **Raises:** `ValueError` if this step has no `make_batch`.
        """
        if self.make_batch is None:
            raise ValueError("scan_generated needs a TrainStep built with `make_batch`")
        partition, leaves = Partition.split(train_state)
        fn = self.compiled("generated", partition, num_steps=num_steps)
        leaves, metrics = fn(leaves)
        return partition.merge(leaves), metrics

    def batch_shape(self, train_state: TrainState) -> Any:
        """The shapes of one generated batch (`jax.eval_shape` of `make_batch`)."""
        if self.make_batch is None:
            raise ValueError("this TrainStep has no `make_batch`")
        return jax.eval_shape(self.make_batch, train_state.key)
