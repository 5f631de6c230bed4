"""Image classification on MNIST-format data, shared by `mnist_mlp` and `mnist_cnn`."""

import time
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

import zoo
import zoo.data
import zoo.hub
import zoo.train

from ._cli import ConfigError
from ._common import (
    is_main_process,
    local_copy,
    plot_classifier_history,
    prepare_workdir,
    publish,
    write_json,
)


def _subset(images: np.ndarray, labels: np.ndarray, n: int | None):
    return (images, labels) if n is None else (images[:n], labels[:n])


def train_classifier(
    recipe: str,
    config: Any,
    workdir: str,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    prepare: Callable[[jax.Array], jax.Array],
    layout: Literal["flat", "chw", "hw"],
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Any, eqx.nn.State | None, list[dict[str, Any]]]:
    """Train the registered architecture `arch` on `config.dataset` with Adam and softmax
    cross-entropy, evaluating on the test split after every epoch.

    `prepare` turns a batch of normalised images `(batch, 28, 28)` into the model's input
    (flattened for an MLP, a channel axis for a ConvNet); `augment(images, key)`, if given,
    transforms each training batch before it, inside the step. Writes `config.json`,
    `metrics.jsonl`, `training.png` and the final model (`model/`) into `workdir`.

    Trains data parallel over `config.devices` devices per process (all by default). In a
    multi-process run (`zoo.train.initialize_distributed` called first) each process reads
    its shard of every batch, and only process 0 writes and prints.

    **Returns:** `(model, model_state, history)`, the model in inference mode.
    """
    # Data first: a missing dataset should not leave an empty run folder behind.
    where = {"data_dir": config.data_dir, "download": config.download}
    train_x, train_y, class_names = zoo.data.load(config.dataset, "train", **where)
    test_x, test_y, _ = zoo.data.load(config.dataset, "test", **where)
    try:
        mesh = zoo.train.data_mesh(config.devices)
    except ValueError as e:
        raise ConfigError(f"{recipe}: --devices: {e}") from None
    if config.batch_size % mesh.devices.size:
        raise ConfigError(
            f"{recipe}: --batch-size {config.batch_size} must be divisible by the "
            f"{mesh.devices.size} devices it is split over (--devices)"
        )
    try:
        loss_fn = zoo.train.classification_loss(
            prepare=prepare, augment=augment, label_smoothing=label_smoothing
        )
    except ValueError as e:
        raise ConfigError(f"{recipe}: --label-smoothing: {e}") from None
    main = is_main_process()
    out = prepare_workdir(workdir, config, resume=config.resume)
    cache = zoo.train.enable_compilation_cache()
    if main:
        write_json(out / "config.json", config)
    train_x, train_y = _subset(train_x, train_y, config.train_examples)
    test_x, test_y = _subset(test_x, test_y, config.test_examples)

    # Standardising uses the training set's pixel statistics, for the test set too; the
    # card records them so that `zoo eval` and users feed the model what it trained on.
    standard = config.normalize == "standard"
    mean = float(train_x.mean(dtype=np.float64)) if standard else 0.0  # what "unit" records
    std = float(train_x.std(dtype=np.float64)) if standard else 1.0
    data = zoo.data.batches(
        {"image": train_x, "label": train_y},
        config.batch_size,
        seed=config.seed,
        num_epochs=None,
        normalize=config.normalize,
        # The pipeline refuses statistics it would not use.
        mean=mean if standard else None,
        std=std if standard else None,
    )
    steps = zoo.data.steps_per_epoch(len(train_x), config.batch_size)
    test = {
        "image": zoo.hub.Preprocess(layout="hw", normalize=config.normalize, mean=mean, std=std)(
            test_x
        ),
        "label": test_y.astype(np.int32),
    }

    k_model, k_train = jr.split(jr.PRNGKey(config.seed))
    model, model_state = zoo.create_model(arch, key=k_model, **arch_kwargs)
    stateful = bool(jax.tree.leaves(model_state))
    if config.lr_schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(config.learning_rate, steps * config.epochs)
    else:
        learning_rate = config.learning_rate
    optimizer = optax.adam(learning_rate)
    train_state = zoo.train.init_train_state(
        model, optimizer, key=k_train, model_state=model_state if stateful else None
    )
    step = zoo.train.TrainStep(loss_fn, optimizer)
    evaluator = zoo.train.Evaluator(
        zoo.train.classification_metrics(prepare=prepare),
        test,
        batch_size=1000,
        prefix="test_",
    )

    t0 = time.perf_counter()
    train_state, history = zoo.train.fit(
        train_state,
        step,
        data,
        num_epochs=config.epochs,
        steps_per_epoch=steps,
        steps_per_dispatch=config.steps_per_dispatch,
        eval_fn=evaluator,
        workdir=out,
        config=config,
        resume=config.resume,
        progress=config.progress,
        mesh=mesh,
    )
    wall = time.perf_counter() - t0
    epochs = [r for r in history if r.get("kind") == "epoch"]
    final = epochs[-1] if epochs else {}
    train_time = sum(r["train_time_s"] for r in epochs)
    if not main:
        return eqx.nn.inference_mode(train_state.model), train_state.model_state, history
    train_state = local_copy(train_state)
    model = eqx.nn.inference_mode(train_state.model)
    plot_classifier_history(history, out / "training.png", f"{recipe} on {config.dataset}: {arch}")
    print(
        f"{recipe}: test accuracy {100 * final.get('test_accuracy', float('nan')):.2f}% "
        f"after {len(epochs)} epochs; training {train_time:.1f} s, wall {wall:.1f} s "
        f"(compilation cache: {cache})"
    )

    summary = {
        "recipe": recipe,
        "dataset": config.dataset,
        "classes": list(class_names),
        "test_accuracy": final.get("test_accuracy"),
        "train_accuracy": final.get("train_accuracy"),
        "epochs": len(epochs),
        "train_time_s": train_time,
        "wall_time_s": wall,
    }
    write_json(out / "results.json", summary)
    preprocess = zoo.hub.Preprocess(layout=layout, normalize=config.normalize, mean=mean, std=std)
    publish(
        recipe,
        config,
        out,
        arch=arch,
        arch_config=arch_kwargs,
        model=model,
        state=train_state.model_state,
        dataset=config.dataset,
        metrics={
            "test_accuracy": summary["test_accuracy"],
            "train_accuracy": summary["train_accuracy"],
            "epochs": len(epochs),
        },
        preprocess=preprocess,
        golden_input=preprocess(test_x[:8]),
        description=f"{arch} trained by recipes.{recipe} on {config.dataset}",
    )
    return model, train_state.model_state, history
