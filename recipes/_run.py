"""The one run skeleton every recipe goes through.

`run_recipe(recipe, config, workdir, body, arch=...)` checks the config, builds the device
mesh, enables the compilation cache and calls `body(config, run)`. The body loads its data,
builds its model and calls `run.fit(plan)` (once, or once per sub-run); the run folder is
created on the first `run.fit` or `run.folder()`, so a bad config or a missing dataset
leaves nothing behind. The body returns what the recipe's `train` returns and, on process 0,
a `Report`: the line to print, `results.json`, and the model to publish.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import equinox as eqx
import jax
from jax.experimental import multihost_utils

import zoo.train

from ._common import local_copy, publish, write_json
from ._config import ConfigError, validate

C = TypeVar("C")
T = TypeVar("T")

# What marks a folder as holding a run: refused without --resume, so nothing is overwritten.
_RUN_MARKERS = ("metrics.jsonl", "checkpoints", "results.json")


@dataclasses.dataclass
class Plan:
    """One call of `zoo.train.fit`: everything but what the skeleton takes from the config
    (steps per dispatch, run folder, resume, progress, logging, trackers, mesh)."""

    train_state: zoo.train.TrainState
    step: zoo.train.TrainStep
    data: Any  # an endless iterable of batches, or None for batches made inside the step
    num_epochs: int
    steps_per_epoch: int
    eval_fn: Any = None
    steps_per_dispatch: int | None = None  # default: the config's


@dataclasses.dataclass
class Fitted:
    """What one `run.fit` returns: on process 0 the train state is a local copy (see
    `local_copy`), elsewhere the replicated arrays of the run."""

    train_state: zoo.train.TrainState
    history: list[dict[str, Any]]
    wall_s: float

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r.get("kind") == "epoch"]

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (`{}` before any epoch)."""
        return self.epochs[-1] if self.epochs else {}

    @property
    def train_time_s(self) -> float:
        return sum(r["train_time_s"] for r in self.epochs)

    @property
    def model(self) -> Any:
        return eqx.nn.inference_mode(self.train_state.model)


@dataclasses.dataclass
class Publication:
    """A trained model to save into `model/` (and under `--publish TAG`)."""

    arch: str
    arch_config: dict[str, Any]
    model: Any
    state: Any
    dataset: str | None
    metrics: dict[str, Any]
    preprocess: Any = None
    golden_input: Any = None
    description: str = ""


@dataclasses.dataclass
class Report:
    """What a recipe reports on process 0: one `message` line, `results` for
    `results.json`, and optionally a model to publish."""

    message: str
    results: dict[str, Any]
    publication: Publication | None = None


class Run(Generic[C]):
    """The run a recipe's body works in: its folder, mesh and `fit`."""

    def __init__(self, recipe: str, config: C, workdir: Path, mesh: jax.sharding.Mesh):
        self.recipe = recipe
        self.config = config
        self.workdir = workdir
        self.mesh = mesh
        self.main = jax.process_index() == 0
        self._folder: Path | None = None
        self._held = contextlib.ExitStack()

    def close(self) -> None:
        """Let go of the run folder's lock (taken by `folder`)."""
        self._held.close()

    def folder(self) -> Path:
        """The run folder, created and locked on the first call (one writer per run folder,
        until `close`). A folder that already holds a run is refused unless resuming, so
        that no earlier result is silently overwritten.

        **Raises:** `FileExistsError`; `zoo.train.RunFolderLockedError` if another run holds
        the folder.
        """
        if self._folder is not None:
            return self._folder
        path = self.workdir
        if self.main:
            # Locked before the check, so that two runs started together cannot both pass.
            self._held.enter_context(zoo.train.lock_run_folder(path))
        if path.is_dir() and not getattr(self.config, "resume", False):
            held = [
                str(p.relative_to(path))
                for p in [path, *(c for c in path.iterdir() if c.is_dir())]
                for p in (p / m for m in _RUN_MARKERS)
                if p.exists()
            ]
            if held:
                raise FileExistsError(
                    f"{path} already holds a run ({', '.join(held[:3])}); pass --resume to "
                    f"continue it, or choose another --workdir"
                )
        path.mkdir(parents=True, exist_ok=True)
        if jax.process_count() > 1:
            # Every process checks the folder before process 0 writes into it.
            multihost_utils.sync_global_devices(f"recipes: prepare {path}")
        self._folder = path
        return path

    def fit(self, plan: Plan, *, subdir: str | None = None) -> Fitted:
        """Train `plan` with `zoo.train.fit` in the run folder (or its `subdir`), with the
        config's steps per dispatch, resume, progress and trackers.

        **Returns:** a `Fitted`, its train state a local copy on process 0.
        """
        config: Any = self.config
        folder = self.folder() if subdir is None else self.folder() / subdir
        t0 = time.perf_counter()
        train_state, history = zoo.train.fit(
            plan.train_state,
            plan.step,
            plan.data,
            num_epochs=plan.num_epochs,
            steps_per_epoch=plan.steps_per_epoch,
            steps_per_dispatch=plan.steps_per_dispatch or config.steps_per_dispatch,
            eval_fn=plan.eval_fn,
            workdir=folder,
            config=config,
            resume=config.resume,
            log_every=config.log_every,
            progress=config.progress,
            mesh=self.mesh,
            trackers=tuple(config.trackers),
        )
        wall = time.perf_counter() - t0
        if self.main:
            train_state = local_copy(train_state)
        return Fitted(train_state, history, wall)


def run_recipe(
    recipe: str,
    config: C,
    workdir: str | Path | None,
    body: Callable[[C, Run[C]], tuple[T, Report | None]],
    *,
    arch: str | None = None,
) -> T:
    """Run a recipe: check `config`, then `body(config, run)`; on process 0 print the
    report's line, write `results.json` and save the published model.

    **Arguments:**

    - `recipe`: the recipe's name (`"mnist_mlp"`), for messages and the default folder.
    - `config`: its `Config` (a `BaseConfig`).
    - `workdir`: the run folder; `None` means `config.workdir`, else `runs/<recipe>`.
    - `body`: the recipe itself: builds data and model, calls `run.fit`, returns `(value,
      report)` (`report` is `None` on processes other than 0).
    - `arch`: the architecture the recipe publishes (`None`: it saves no model, and
      `--publish` is refused).

    **Returns:** `value`, what `body` returned.

    **Raises:** `ConfigError` for a config that cannot run (before anything is written);
    whatever `zoo.train.fit` raises.
    """
    cfg: Any = config
    validate(recipe, cfg, arch=arch)
    try:
        mesh = zoo.train.data_mesh(cfg.devices)
    except ValueError as e:
        raise ConfigError(f"{recipe}: --devices: {e}") from None
    folder = Path(workdir or cfg.workdir or f"runs/{recipe}")
    cache = zoo.train.enable_compilation_cache()
    run = Run(recipe, config, folder, mesh)
    try:
        return _run_body(recipe, config, run, body, "off" if cache is None else str(cache))
    finally:
        run.close()


def _run_body(
    recipe: str,
    config: C,
    run: Run[C],
    body: Callable[[C, Run[C]], tuple[T, Report | None]],
    cache: str,
) -> T:
    value, report = body(config, run)
    if report is None or not run.main:
        return value
    out = run.folder()
    if not (out / "config.json").exists():
        # Recipes whose fits all ran in sub-folders: the config of the whole run.
        write_json(out / "config.json", config)
    write_json(out / "results.json", report.results)
    print(f"{report.message} (compilation cache: {cache})")
    if report.publication is not None:
        p = report.publication
        publish(
            recipe,
            config,
            out,
            arch=p.arch,
            arch_config=p.arch_config,
            model=p.model,
            state=p.state,
            dataset=p.dataset,
            metrics=p.metrics,
            preprocess=p.preprocess,
            golden_input=p.golden_input,
            description=p.description,
        )
    return value
