"""Runs for the data-parallel tests, each in a fresh process because JAX fixes its devices
and processes at start-up:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python _parallel_worker.py devices OUT
    python _parallel_worker.py process OUT WORKDIR EPOCHS [COORDINATOR NUM_PROCESSES ID]

`devices` trains tiny models on meshes of 1 and 4 devices; `process` trains (or resumes) the
tiny ConvNet in `WORKDIR` as one process of a run, or alone without the last three arguments.
Each writes its results as JSON to `OUT`.
"""

import contextlib
import json
import sys

import jax
import numpy as np
from jaxtyping import install_import_hook

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# Shape-checked as in pytest for the one `devices` run; the hook costs ~4 s of CPU per
# process, too much for the five processes of the multi-process test.
with (
    install_import_hook("zoo", "beartype.beartype")
    if sys.argv[1:2] == ["devices"]
    else contextlib.nullcontext()
):
    import zoo
    import zoo.data
    import zoo.train

import equinox as eqx  # noqa: E402
import jax.random as jr  # noqa: E402
import optax  # noqa: E402

N, BATCH, SIZE, CLASSES = 64, 16, 8, 3
STEPS_PER_EPOCH = N // BATCH


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(N, SIZE, SIZE)).astype(np.float32)
    label = (image[:, :2].mean(axis=(1, 2)) > 0).astype(np.int32) + (image[:, 0, 0] > 1)
    return {"image": image, "label": label.astype(np.int32), "index": np.arange(N, dtype=np.int32)}


def setup(kind: str):
    """`(train_state, step, eval_fn)` for `"mlp"` (stateless) or `"cnn"` (BatchNorm)."""
    key_model, key_train = jr.split(jr.PRNGKey(0))
    if kind == "mlp":
        model = zoo.MLP(SIZE * SIZE, CLASSES, width=16, depth=1, key=key_model)
        state = None

        def prepare(x):
            return x.reshape(x.shape[0], -1)
    else:
        model, state = eqx.nn.make_with_state(zoo.ConvNet)(
            channels=(4, 4),
            kernel_sizes=3,
            strides=2,
            batch_norm=(True, False),
            in_size=SIZE,
            num_classes=CLASSES,
            bn_momentum=0.5,
            key=key_model,
        )

        def prepare(x):
            return x[:, None]

    # SGD for the ConvNet: the conv bias before BatchNorm has a zero gradient, which Adam
    # would turn into +-lr steps of float noise, different on every device count.
    optimizer = optax.adam(1e-2) if kind == "mlp" else optax.sgd(0.1)
    train_state = zoo.train.init_train_state(model, optimizer, key=key_train, model_state=state)
    step = zoo.train.TrainStep(zoo.train.classification_loss(prepare=prepare), optimizer)
    test = arrays()
    evaluator = zoo.train.Evaluator(
        zoo.train.classification_metrics(prepare=prepare),
        {"image": test["image"], "label": test["label"]},
        batch_size=32,
    )

    def evaluate(model, state):
        # Equinox's BatchNorm (mode="batch") computes `momentum**counter` (float ** int32)
        # in inference mode, which strict dtype promotion refuses.
        with jax.numpy_dtype_promotion("standard"):
            return evaluator(model, state)

    return train_state, step, evaluate


def losses(history) -> list[float]:
    return [r["loss"] for r in history if r["kind"] == "step"]


def leaves(tree) -> list[list[float]]:
    arrays = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return [np.asarray(a, np.float64).ravel().tolist() for a in arrays]


def devices(out: str) -> None:
    import zoo.train._fit as fit_module

    assert jax.device_count() == 4, jax.devices()
    seen = []
    to_device = fit_module.to_device

    def recording(batch, mesh=None, *, stacked=False):
        placed = to_device(batch, mesh, stacked=stacked)
        image = placed["image"]
        shapes = [list(s.data.shape) for s in image.addressable_shards]
        seen.append(
            {"spec": str(image.sharding.spec), "shape": list(image.shape), "shards": shapes}
        )
        return placed

    fit_module.to_device = recording
    results = {}
    for kind, K in (("mlp", 1), ("mlp", 2), ("cnn", 1)):
        for n in (1, 4):
            train_state, step, evaluate = setup(kind)
            data = zoo.data.batches(arrays(), BATCH, seed=0, normalize=None)
            seen.clear()
            ts, history = zoo.train.fit(
                train_state,
                step,
                data,
                num_epochs=1,
                steps_per_epoch=STEPS_PER_EPOCH,
                steps_per_dispatch=K,
                log_every=1,
                progress=False,
                mesh=zoo.train.data_mesh(n),
                eval_fn=evaluate,
            )
            eval_placement = zoo.train._evaluate._eval_placement(ts.model)
            eval_batch = None if eval_placement is None else eval_placement(np.zeros(32))
            results[f"{kind}-K{K}-{n}"] = {
                "eval_loss": [r["eval_loss"] for r in history if r["kind"] == "epoch"],
                "eval_shards": None
                if eval_batch is None
                else [list(x.data.shape) for x in eval_batch.addressable_shards],
                "losses": losses(history),
                "params": leaves(ts.model),
                "model_state": leaves(ts.model_state),
                "placed": seen[0],
                "param_sharding": str(jax.tree.leaves(ts.model)[0].sharding.spec),
                "num_param_devices": len(jax.tree.leaves(ts.model)[0].sharding.device_set),
            }
    # Data generated inside the step (as the OU recipe), split over the devices.
    for n in (1, 4):
        model = zoo.MLP(4, 1, width=8, depth=1, key=jr.PRNGKey(0))
        optimizer = optax.adam(1e-2)

        def make_batch(key):
            x = jr.normal(key, (BATCH, 4))
            return {"x": x, "y": x.sum(axis=1, keepdims=True)}

        step = zoo.train.TrainStep(zoo.train.regression_loss(), optimizer, make_batch=make_batch)
        ts = zoo.train.init_train_state(model, optimizer, key=jr.PRNGKey(1))
        ts, history = zoo.train.fit(
            ts,
            step,
            None,
            num_epochs=1,
            steps_per_epoch=4,
            steps_per_dispatch=2,
            log_every=1,
            progress=False,
            mesh=zoo.train.data_mesh(n),
        )
        results[f"generated-{n}"] = {"losses": losses(history), "params": leaves(ts.model)}
    try:
        zoo.train.global_batch({"x": np.zeros((6, 2), np.float32)}, zoo.train.data_mesh())
    except ValueError as e:
        results["uneven_error"] = str(e)
    with open(out, "w") as f:
        json.dump(results, f)


def process(out: str, workdir: str, epochs: int, *distributed: str) -> None:
    if distributed:
        coordinator, count, index = distributed
        assert zoo.train.initialize_distributed(coordinator, int(count), int(index))
    # Built after initialize, so each process reads its own shard.
    data = zoo.data.batches(arrays(), BATCH, seed=0, normalize=None)
    train_state, step, evaluate = setup("cnn")
    ts, history = zoo.train.fit(
        train_state,
        step,
        data,
        num_epochs=epochs,
        steps_per_epoch=STEPS_PER_EPOCH,
        workdir=workdir,
        resume=True,
        log_every=1,
        progress=False,
        eval_fn=evaluate,
    )
    indices = []  # the examples this process read, batch by batch
    for i in range(epochs * STEPS_PER_EPOCH):
        batch = data[i]
        assert batch is not None
        indices.append(batch["index"].tolist())
    result = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "losses": losses(history),
        "steps": [r["step"] for r in history if r["kind"] == "step"],
        "indices": indices,
        "params": leaves(ts.model),
        "eval_loss": [r["eval_loss"] for r in history if r["kind"] == "epoch"],
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "devices":
        devices(*args)
    else:
        process(args[0], args[1], int(args[2]), *args[3:])
