"""The command line of every recipe: tyro reads the recipe's `Config` dataclass.

    zoo train mnist_mlp --epochs 5 --resume --trackers jsonl tensorboard
    zoo train mnist_mlp --help

Flags are the config's fields (`--learning-rate 3e-4`), booleans are `--resume` /
`--no-resume`, tuples take several values (`--trackers jsonl tensorboard`), and `--help`
shows each field's comment and default. A value of the wrong type is tyro's error (exit
status 2, naming the flag); a value out of range, a missing dataset, a folder that holds a
run or one that another run is using (its PID named) is one line on stderr with status 2;
an expected failure during the run (non-finite loss, a failed check in the step such as
labels out of range, a checkpoint that does not match or
that no checkpoint in the folder survives intact, a disk that is full or not writable) is
one line with status 1, never a traceback.

The multi-process flags `--coordinator HOST:PORT`, `--num-processes N`, `--process-id I`
(or `ZOO_COORDINATOR`, `ZOO_NUM_PROCESSES`, `ZOO_PROCESS_ID`, or nothing under SLURM's
`srun`) join the run with `zoo.train.initialize_distributed` before anything touches a
device.
"""

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tyro

import zoo.train

from ._config import ConfigError, flag, validate

C = TypeVar("C")


def parse(recipe: str, config_cls: type[C], argv: Sequence[str], doc: str | None = None) -> C:
    """Parse `argv` into `config_cls` with tyro (`--help` prints and exits with status 0; a
    bad flag prints tyro's message and exits with status 2).

    **Returns:** the config.
    """
    return tyro.cli(
        config_cls,
        args=list(argv),
        prog=f"zoo train {recipe}",
        description=doc,
    )


def _expected_failures() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(usage errors: status 2, run failures: status 1)."""
    from zoo.data import DatasetNotFoundError
    from zoo.train import (
        CheckpointCorruptError,
        CheckpointMismatchError,
        NonFiniteLossError,
        RunFolderLockedError,
        StepCheckError,
    )

    return (
        (ConfigError, DatasetNotFoundError, FileExistsError, RunFolderLockedError),
        (
            NonFiniteLossError,
            StepCheckError,
            CheckpointMismatchError,
            CheckpointCorruptError,
            OSError,
        ),
    )


def main(
    recipe: str,
    config_cls: type[C],
    train: Callable[[C, str | None], Any],
    argv: Sequence[str] | None,
    doc: str | None = None,
) -> int:
    """The body of every recipe's `main`: parse, check, join a multi-process run, train,
    and turn expected failures into one line on stderr.

    **Returns:** the exit status: 0, 2 for a usage error, 1 for a failed run, 130 when
    interrupted (the message says how to resume).
    """
    from zoo.train import TrainingInterrupted, initialize_distributed

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse(recipe, config_cls, argv, doc)
    except SystemExit as e:  # --help (0), or tyro's message for a bad flag (2)
        return e.code if isinstance(e.code, int) else 2
    usage, failures = _expected_failures()
    try:
        cfg: Any = config
        validate(recipe, cfg, publish=False)  # the recipe checks --publish for its arch
        dist = cfg.distributed
        try:
            # Before the recipe touches a device or builds its data shards.
            initialize_distributed(dist.coordinator, dist.num_processes, dist.process_id)
        except ValueError as e:
            raise ConfigError(f"{recipe}: {e}") from None
        train(config, None)
    except usage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except failures as e:
        print(f"error: {recipe}: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    text = str(error).strip().replace("\n", " ")
    if isinstance(error, OSError) and error.strerror and error.filename:
        text = f"{error.strerror}: {error.filename}"
    return text or type(error).__name__


def _value_args(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag(name) if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, tuple):
        return [flag(name), *map(str, value)]
    return [flag(name), str(value)]


def command_line(recipe: str, config: Any) -> str:
    """The `zoo train` command that reproduces `config`: the fields that differ from their
    defaults, leaving out those that only steer the run.

    **Returns:** e.g. `"zoo train mnist_cnn --preset strong --epochs 15"`.
    """
    parts = [f"zoo train {recipe}"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if zoo.train.is_steering(field) or value == field.default:
            continue
        parts += _value_args(field.name, value)
    return " ".join(parts)
