"""Evaluation and prediction over a whole data set through one compiled function."""

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Bool, PyTree

from ._checks import batch_problems, class_count
from ._loss import Batch, MetricFn, batch_apply
from ._parallel import DATA_AXIS, batch_sharding
from ._state import check_model_state


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    # Repeat the first example rather than zero-fill, so padded rows stay in the data's
    # domain (no log(0) or division by zero to mask away).
    if x.shape[0] == size:
        return x
    fill = np.repeat(x[:1], size - x.shape[0], axis=0)
    return np.concatenate([x, fill], axis=0)


def _padded_batches(
    data: Mapping[str, Any] | Iterable[Batch], batch_size: int | None
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, int]]:
    """`(batch, mask, n_valid)` with every batch padded to one size, so one compile serves
    the whole data set, including its short last batch."""
    if isinstance(data, Mapping):
        arrays: dict[str, np.ndarray] = {str(k): np.asarray(v) for k, v in data.items()}
        n = len(next(iter(arrays.values())))
        if batch_size is None:
            raise ValueError("evaluating a dict of whole arrays needs a `batch_size`")
        for start in range(0, n, batch_size):
            part: dict[str, np.ndarray] = {
                k: v[start : start + batch_size] for k, v in arrays.items()
            }
            yield from _padded_batches([part], batch_size)
        return
    size = batch_size
    for batch in data:
        batch = {k: np.asarray(v) for k, v in batch.items()}
        n = len(next(iter(batch.values())))
        if size is None:
            size = n  # the first batch sets the size; later, shorter ones are padded
        if n > size:
            raise ValueError(f"a batch of {n} examples is larger than the batch size {size}")
        mask = np.arange(size) < n
        yield {k: _pad(v, size) for k, v in batch.items()}, mask, n


@eqx.filter_jit
def _sum_metrics(
    metric_fn: MetricFn,
    model: PyTree,
    model_state: eqx.nn.State,
    batch: Batch,
    mask: Bool[Array, " batch"],
) -> dict[str, Array]:
    per_example = metric_fn(model, model_state, batch)
    out = {}
    for name, values in per_example.items():
        values = jnp.asarray(values).astype(jnp.float32)
        if values.shape != mask.shape:
            raise ValueError(
                f"metric {name!r} must have one value per example, shape {mask.shape}; "
                f"got {values.shape}"
            )
        out[name] = jnp.sum(jnp.where(mask, values, 0.0))
    return out


def _eval_placement(model: PyTree) -> Callable[[Any], Any] | None:
    """For a model replicated over a data-parallel mesh (as `fit` holds it), a function
    that splits a whole batch, held by every process, along the mesh's `"data"` axis; else
    `None`, and batches go where the model is."""
    for leaf in jax.tree.leaves(model):
        if isinstance(leaf, jax.Array):
            sharding = leaf.sharding
            mesh = getattr(sharding, "mesh", None)
            if not isinstance(mesh, Mesh) or DATA_AXIS not in mesh.shape:
                return None
            split, size = batch_sharding(mesh), mesh.shape[DATA_AXIS]

            def place(x):
                x = np.asarray(x)
                if size == 1 or x.shape[0] % size:
                    return None
                # The global shape equal to the local one: every process holds the whole
                # batch and keeps only its devices' slices.
                return jax.make_array_from_process_local_data(split, x, x.shape)

            return place
    return None


def evaluate(
    metric_fn: MetricFn,
    model: PyTree,
    model_state: eqx.nn.State | None,
    data: Mapping[str, Any] | Iterable[Batch],
    *,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Mean of per-example metrics over a whole data set, in inference mode.

    Every batch is padded to the same size and masked, so the data set's short last batch
    does not compile a second function. For a model replicated over a data-parallel mesh
    (what `fit` passes its `eval_fn`), each batch is split over the mesh's devices as in
    training, where its size divides over them; with several processes, every process
    passes the whole data set and gets the same result.

    **Arguments:**

    - `metric_fn`: `metric_fn(model, model_state, batch) -> {name: values}` with one value
      per example, e.g. [`zoo.train.classification_metrics`][]. Pass the same function
      object each time, or each call compiles anew.
    - `model`, `model_state`: the model (put into `eqx.nn.inference_mode` here) and its
      `eqx.nn.State` (empty, or `None`, for a stateless model).
    - `data`: a dict of whole arrays sharing their leading axis (batched here with
      `batch_size`), or an iterable of dict batches (a Grain dataset, a list); batches
      after the first may be smaller and are padded to its size, or to `batch_size`.
    - `batch_size`: the examples per compiled call.

    **Returns:** `{name: mean over all examples}` as Python floats.

    **Raises:** `ValueError` for an empty data set, a metric without one value per example,
    or non-finite metrics from bad data (labels outside `[0, num_classes)` for a model with
    `num_classes`, negative labels, NaN or infinite inputs), naming the examples and what is
    wrong.
    """
    model_state = check_model_state(model, model_state)
    model = eqx.nn.inference_mode(model)
    place = _eval_placement(model)
    # Per-batch sums stay on the device (no sync between batches) and are added up on the
    # host in float64 at the end.
    sums = []
    problems: list[tuple[int, int, list[str]]] = []  # (first example, size, what is wrong)
    num_classes = class_count(getattr(model, "num_classes", None))
    count = 0
    for batch, mask, n in _padded_batches(data, batch_size):
        # On the host, while the device works: read only if a metric comes out non-finite.
        found = batch_problems({k: v[:n] for k, v in batch.items()}, num_classes)
        if found:
            problems.append((count, n, found))
        placed = None if place is None else place(mask)
        if place is not None and placed is not None:  # data parallel, as in training
            device_batch: Any = {k: place(v) for k, v in batch.items()}
            device_mask = placed
        else:
            device_batch, device_mask = batch, jnp.asarray(mask)
        sums.append(_sum_metrics(metric_fn, model, model_state, device_batch, device_mask))
        count += n
    if count == 0:
        raise ValueError("cannot evaluate on an empty data set")
    sums = jax.device_get(sums)
    means = {
        name: float(np.sum([s[name] for s in sums], dtype=np.float64)) / count for name in sums[0]
    }
    if problems and not all(np.isfinite(v) for v in means.values()):
        first, n, found = problems[0]
        raise ValueError(
            f"evaluate: the metrics are not finite because of the data: in examples "
            f"{first}-{first + n - 1}, {'; '.join(found)}"
        )
    return means


class Evaluator:
    """A data set and a metric function bound together: `evaluator(model, model_state)`.

    This is the shape `fit`'s `eval_fn` takes. The metric names get `prefix` in front.
    """

    def __init__(
        self,
        metric_fn: MetricFn,
        data: Mapping[str, Any] | Iterable[Batch],
        *,
        batch_size: int | None = None,
        prefix: str = "eval_",
    ):
        """**Arguments:** `metric_fn`, `data` and `batch_size` as in
        [`zoo.train.evaluate`][]; `prefix` for the names of the results (e.g. `"test_"`).

        **Raises:** `ValueError` for a dict of whole arrays without a positive `batch_size`,
        here rather than at the first evaluation, after an epoch of training.
        """
        if isinstance(data, Mapping) and (
            batch_size is None or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(
                "Evaluator: `data` is a dict of whole arrays, so it needs a positive "
                f"`batch_size` (examples per evaluation batch, e.g. 1000), got {batch_size!r}"
            )
        self.metric_fn = metric_fn
        self.data = data
        self.batch_size = batch_size
        self.prefix = prefix

    def __call__(self, model: PyTree, model_state: eqx.nn.State | None) -> dict[str, float]:
        """**Returns:** `{prefix + name: mean}` over the whole data set."""
        means = evaluate(self.metric_fn, model, model_state, self.data, batch_size=self.batch_size)
        return {self.prefix + k: v for k, v in means.items()}


@eqx.filter_jit
def _predict_batch(fn: Callable, model: PyTree, model_state, x: PyTree) -> PyTree:
    return fn(model, model_state, x)


def _default_predict(model, model_state, x):
    return batch_apply(model, model_state, x)[0]


def predict(
    model: PyTree,
    model_state: eqx.nn.State | None,
    x: PyTree,
    *,
    batch_size: int,
    fn: Callable[[PyTree, eqx.nn.State | None, PyTree], PyTree] | None = None,
) -> PyTree:
    """The model's outputs for every example of `x`, in inference mode.

    **Arguments:**

    - `model`, `model_state`: the model and its `eqx.nn.State` (empty, or `None`, for a
      stateless model).
    - `x`: the inputs, an array or a PyTree of arrays sharing a leading axis of examples.
    - `batch_size`: examples per compiled call; the last batch is padded, not recompiled.
    - `fn`: `fn(model, model_state, x_batch) -> outputs_batch`; by default the model applied
      to each example ([`zoo.train.batch_apply`][]).

    **Returns:** the outputs for all examples, leading axis of the same length as `x`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    fn = _default_predict if fn is None else fn
    model_state = check_model_state(model, model_state)
    model = eqx.nn.inference_mode(model)
    leaves, treedef = jax.tree.flatten(x)
    n = leaves[0].shape[0]
    outputs = []
    for start in range(0, n, batch_size):
        part = [_pad(np.asarray(v[start : start + batch_size]), batch_size) for v in leaves]
        out = _predict_batch(fn, model, model_state, jax.tree.unflatten(treedef, part))
        valid = min(batch_size, n - start)
        outputs.append(jax.tree.map(lambda y, valid=valid: y[:valid], out))
    return jax.tree.map(lambda *ys: jnp.concatenate(ys, axis=0), *outputs)
