"""The configuration every recipe shares, and the checks run on it before anything starts.

A recipe's `Config` is a frozen dataclass that extends `BaseConfig`. Two kinds of field
metadata say what the run skeleton needs to know about a field:

- `number(default, ge=..., gt=..., le=..., lt=...)`: a numeric field and its bounds. Every
  numeric field is declared this way (a test holds every recipe to it), so `validate`
  refuses `--epochs 0` or `--learning-rate nan` before any data is loaded or file written.
- `steering(default)` (`zoo.train.steering_field`): a field that only steers the run
  (where it writes, whether it resumes, what it prints or publishes) and may change on
  `--resume` without changing the result; `fit`'s resume check ignores it, and the command
  line recorded in a model card leaves it out.
"""

import dataclasses
import math
from typing import Annotated, Any, Literal

import numpy as np
import tyro

import zoo.train

# The metadata key of a numeric field's bounds (the steering mark is `zoo.train`'s own).
BOUNDS = "zoo.recipes.bounds"

Tracker = Literal["jsonl", "tensorboard", "wandb"]


class ConfigError(ValueError):
    """A config value that cannot run; the message names the flag and what it needs."""


def flag(name: str) -> str:
    """The command-line flag of a config field: `learning_rate` -> `--learning-rate`."""
    return "--" + name.replace("_", "-")


def number(
    default: Any,
    *,
    ge: int | float | None = None,
    gt: int | float | None = None,
    le: int | float | None = None,
    lt: int | float | None = None,
    steering: bool = False,
) -> Any:
    """A numeric config field (an `int`, `float`, `None` where the type allows it, or a tuple
    of numbers) with inclusive (`ge`, `le`) or exclusive (`gt`, `lt`) bounds. Floats must be
    finite in any case.

    **Returns:** a `dataclasses.field` carrying the bounds in its metadata.
    """
    metadata: dict[str, Any] = {BOUNDS: {"ge": ge, "gt": gt, "le": le, "lt": lt}}
    if steering:
        return zoo.train.steering_field(default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def steering(default: Any) -> Any:
    """A config field that only steers the run (see the module docstring): `fit`'s resume
    check ignores it.

    **Returns:** `zoo.train.steering_field(default)`.
    """
    return zoo.train.steering_field(default)


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Multi-process runs: one command per process; by default read from the environment
    ($ZOO_COORDINATOR, $ZOO_NUM_PROCESSES, $ZOO_PROCESS_ID) or SLURM's srun."""

    coordinator: str | None = None  # process 0's address, HOST:PORT
    num_processes: int | None = number(None, ge=1)  # processes in all
    process_id: int | None = number(None, ge=0)  # this process, 0..N-1


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """What every recipe takes besides its own settings."""

    seed: int = number(0, ge=0)  # seeds the model's initialisation and the data order
    steps_per_dispatch: int = number(1, ge=1)  # optimiser steps per compiled call
    devices: int | None = number(
        None, ge=1, steering=True
    )  # data parallel over the first N (default all)
    resume: bool = steering(False)  # continue the run in --workdir from its last checkpoint
    progress: bool = steering(True)  # show a progress bar
    log_every: int = number(100, ge=1, steering=True)  # steps between logged training losses
    trackers: tuple[Tracker, ...] = steering(("jsonl",))  # where metrics are logged
    publish: str | None = steering(None)  # a tag: also save the model as <arch>.<tag>
    publish_dir: str | None = steering(None)  # where --publish saves (default $ZOO_HOME/weights)
    workdir: str | None = steering(None)  # the run folder (default runs/<recipe>)
    distributed: Annotated[Distributed, tyro.conf.OmitArgPrefixes] = steering(Distributed())


def _bound_error(value: int | float, bounds: dict[str, int | float | None]) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    ge, gt, le, lt = bounds["ge"], bounds["gt"], bounds["le"], bounds["lt"]
    low = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else "(-inf"
    high = f"{le:g}]" if le is not None else f"{lt:g})" if lt is not None else "inf)"
    inside = (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )
    if inside:
        return None
    if high == "inf)":
        return f"must be {'>=' if ge is not None else '>'} {ge if ge is not None else gt:g}"
    return f"must be in {low}, {high}"


def _check_fields(recipe: str, config: Any) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            _check_fields(recipe, value)
            continue
        # A config built in Python (or from JSON) may carry "no" where a bool belongs, which
        # every `if config.x:` would read as True.
        if field.type in (bool, "bool") and not isinstance(value, bool | np.bool_):
            raise ConfigError(f"{recipe}: {flag(field.name)} expects True or False; got {value!r}")
        bounds = field.metadata.get(BOUNDS)
        if bounds is None or value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ConfigError(f"{recipe}: {flag(field.name)} expects a number; got {item!r}")
            problem = _bound_error(item, bounds)
            if problem:
                raise ConfigError(f"{recipe}: {flag(field.name)} {problem}; got {item!r}")


def check_publish(recipe: str, tag: str | None, arch: str | None) -> None:
    """Refuse a `--publish` tag before training: one that is not a valid weights tag, one
    that zoo's own weight sets already use for `arch`, or any tag when the recipe saves no
    model (`arch=None`).

    **Raises:** `ConfigError` naming `--publish`.
    """
    if tag is None:
        return
    if arch is None:
        raise ConfigError(f"{recipe}: --publish: this recipe saves no model to publish")
    import zoo.hub

    try:
        zoo.hub.check_publish_tag(arch, tag)
    except (ValueError, LookupError) as e:
        raise ConfigError(f"{recipe}: --publish: {e}") from None


def validate(recipe: str, config: Any, *, arch: str | None = None, publish: bool = True) -> None:
    """Check every numeric field against its bounds, every `bool` field's type, the trackers
    and the `--publish` tag.

    **Arguments:** `recipe`, the recipe's name (for the message); `config`, its config;
    `arch`, the architecture it publishes (`None`: it saves no model); `publish=False`
    leaves the `--publish` tag to a later check that knows the architecture.

    **Raises:** `ConfigError` with one line naming the flag, e.g. `mnist_mlp: --epochs must
    be >= 1; got 0`.
    """
    _check_fields(recipe, config)
    if not config.trackers:
        raise ConfigError(f"{recipe}: --trackers needs at least one of jsonl, tensorboard, wandb")
    if publish:
        check_publish(recipe, config.publish, arch)
