"""What recipes write: JSON and figures (atomically), the local copy of a replicated model,
training plots, and the saved model."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import matplotlib

from zoo._atomic import atomic_path, atomic_write

matplotlib.use("Agg")  # recipes run headless; plots go to PNG files
import matplotlib.pyplot as plt  # noqa: E402


def local_copy(tree: Any) -> Any:
    """The replicated arrays of `tree` as arrays on this process's first device.

    `fit` returns arrays replicated over every device of the run; a computation on them
    needs every process, so process 0 alone (plots, golden outputs) must use a local copy.
    """

    def local(x):
        if isinstance(x, jax.Array) and x.is_fully_replicated:
            return x.addressable_data(0)
        return x

    return jax.tree.map(local, tree)


def write_text(path: Path, text: str) -> None:
    """Write `text` atomically (`zoo._atomic.atomic_write`: a temporary file in the same
    folder, fsynced, renamed; removed if anything fails)."""
    atomic_write(path, text)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (see `write_text`); a dataclass is written as its fields.

    The text is built before anything is written, so an object that cannot be serialised
    leaves neither a temporary file nor a changed `path`."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_figure(fig, path: Path) -> Path:
    """Save `fig` as a PNG atomically (`zoo._atomic.atomic_path`: a temporary file removed
    on any failure, renamed over `path` on success) and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_classifier_history(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Two panels: the training loss per logged step, and train/test accuracy per epoch."""
    steps = [r for r in history if r.get("kind") == "step"]
    epochs = [r for r in history if r.get("kind") == "epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss (cross-entropy)", yscale="log", title="loss")
    ax_loss.grid(alpha=0.3)
    if epochs:
        x = [r["epoch"] for r in epochs]
        ax_acc.plot(x, [100 * r["train_accuracy"] for r in epochs], "o-", label="train")
        ax_acc.plot(x, [100 * r["test_accuracy"] for r in epochs], "s-", label="test")
        best = max(epochs, key=lambda r: r["test_accuracy"])
        ax_acc.annotate(
            f"{100 * best['test_accuracy']:.2f}%",
            (best["epoch"], 100 * best["test_accuracy"]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
        )
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def publish(
    recipe: str,
    config: Any,
    out: Path,
    *,
    arch: str,
    arch_config: dict[str, Any],
    model: Any,
    state: Any,
    dataset: str | None,
    metrics: dict[str, Any],
    preprocess: Any = None,
    golden_input: Any = None,
    description: str = "",
) -> list[Path]:
    """Save the trained model in the hub's pretrained format: always into `out/model`, and,
    with `--publish TAG`, into `<publish_dir or $ZOO_HOME/weights>/<arch>.<TAG>` so that
    `zoo.create_model("<arch>.<TAG>", pretrained=True)` finds it.

    **Returns:** the folders written.
    """
    import zoo
    import zoo.hub

    from ._cli import command_line

    tag = config.publish or "run"
    card = zoo.ModelCard(
        name=f"{arch}.{tag}",
        config=arch_config,
        dataset=dataset,
        metrics=metrics,
        command=command_line(recipe, config),
        recipe_config=dataclasses.asdict(config),
        preprocess=preprocess,
        description=description,
    )
    targets = [out / "model"]
    if config.publish:
        root = Path(config.publish_dir) if config.publish_dir else zoo.hub.user_weights_dir()
        targets.append(root / card.name)
    for target in targets:
        zoo.save_pretrained(target, model, state, card=card, golden_input=golden_input)
    return targets
