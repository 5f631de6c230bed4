"""Command lines for recipes: `--field value` pairs parsed into a frozen `Config` dataclass.

Every recipe's `main(argv)` goes through `run`, so that a bad flag, a value of the wrong type
or a missing dataset is one line on stderr and exit status 2, never a traceback.

`run` also takes the multi-process flags `--coordinator HOST:PORT`, `--num-processes N` and
`--process-id I` (or `ZOO_COORDINATOR`, `ZOO_NUM_PROCESSES`, `ZOO_PROCESS_ID`; or nothing
under SLURM's `srun`), and joins the run with `zoo.train.initialize_distributed` before the
recipe touches a device. They are not config fields: they say where a process runs, not
what it computes.
"""

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A command-line flag that names no config field, or a value of the wrong type."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_value(recipe: str, field: dataclasses.Field, text: str) -> Any:
    kind: Any = field.type  # a real type: no recipe module defers its annotations
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if origin is typing.Literal:
            choices = typing.get_args(kind)
            if text not in choices:
                raise ConfigError(
                    f"{recipe}: {_flag(field.name)} must be one of {', '.join(choices)}; "
                    f"got {text!r}"
                )
            return text
        if origin is tuple:
            (item, *_rest) = typing.get_args(kind)
            return tuple(item(v) for v in text.split(",") if v.strip())
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if text.lower() == "none":
                return None
            return args[0](text)
        return kind(text)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        type_name = getattr(kind, "__name__", str(kind))
        raise ConfigError(
            f"{recipe}: {_flag(field.name)} expects a value of type {type_name}; got {text!r}"
        ) from None


def usage(recipe: str, config_cls: type, doc: str | None) -> str:
    lines = [f"usage: python -m recipes.{recipe} [--field value ...]", ""]
    if doc:
        lines += [doc.strip().splitlines()[0], ""]
    lines.append("config fields (default):")
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        if typing.get_origin(kind) is typing.Literal:
            type_name = "|".join(typing.get_args(kind))
        else:
            type_name = getattr(kind, "__name__", str(kind)).replace("typing.", "")
        lines.append(f"  {_flag(f.name):<22} {type_name:<20} {f.default!r}")
    lines.append(f"  {'--workdir':<22} {'str':<20} where outputs go (default runs/{recipe})")
    lines += [
        "",
        "multi-process runs (one command per process; default: the environment):",
        f"  {'--coordinator':<22} {'host:port':<20} process 0's address ($ZOO_COORDINATOR)",
        f"  {'--num-processes':<22} {'int':<20} processes in all ($ZOO_NUM_PROCESSES)",
        f"  {'--process-id':<22} {'int':<20} this process, 0..N-1 ($ZOO_PROCESS_ID)",
    ]
    return "\n".join(lines)


_DISTRIBUTED = {"coordinator": str, "num_processes": int, "process_id": int}


def pop_distributed(recipe: str, argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Split the multi-process flags off `argv`.

    **Returns:** `(flags, rest)`: `{"coordinator": ..., ...}` for the flags given (as
    keyword arguments of `zoo.train.initialize_distributed`) and the remaining arguments.

    **Raises:** `ConfigError` for a flag without a value or a count that is not an integer.
    """
    flags: dict[str, Any] = {}
    rest: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        if key not in _DISTRIBUTED:
            rest.append(arg)
            continue
        if not eq:
            if not args:
                raise ConfigError(f"{recipe}: {arg} needs a value")
            value = args.pop(0)
        try:
            flags[key] = _DISTRIBUTED[key](value)
        except ValueError:
            raise ConfigError(f"{recipe}: {_flag(key)} expects an integer; got {value!r}") from None
    return flags, rest


def parse_config(recipe: str, config_cls: type[C], argv: Sequence[str]) -> tuple[C, str | None]:
    """Parse `--field value` / `--field=value` pairs into `config_cls`.

    **Returns:** `(config, workdir)`; `workdir` is `None` when `--workdir` was not given.

    **Raises:** `ConfigError` naming the flag that is unknown, lacks a value, or has a value
    of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(config_cls)
    for f in fields.values():
        f.type = hints[f.name]
    values: dict[str, Any] = {}
    workdir = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ConfigError(f"{recipe}: unexpected argument {arg!r}; flags are --field value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if not args:
                raise ConfigError(f"{recipe}: {arg} needs a value")
            value = args.pop(0)
        key = name.replace("-", "_")
        if key == "workdir":
            workdir = value
            continue
        if key not in fields:
            known = ", ".join(_flag(n) for n in fields)
            raise ConfigError(f"{recipe}: unknown config field {_flag(key)}; known: {known}")
        values[key] = _parse_value(recipe, fields[key], value)
    return config_cls(**values), workdir


def run(
    recipe: str,
    config_cls: type[C],
    train: Callable[[C, str], Any],
    argv: Sequence[str] | None,
    doc: str | None = None,
) -> int:
    """The body of every recipe's `main`: parse, train, and turn expected failures into one
    line on stderr with a non-zero exit status."""
    from zoo.data import DatasetNotFoundError
    from zoo.train import TrainingInterrupted, initialize_distributed

    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(usage(recipe, config_cls, doc))
        return 0
    try:
        distributed, argv = pop_distributed(recipe, argv)
        config, workdir = parse_config(recipe, config_cls, argv)
        try:
            # Before the recipe touches a device or builds its data shards.
            initialize_distributed(**distributed)
        except ValueError as e:
            raise ConfigError(f"{recipe}: {e}") from None
        train(config, workdir or f"runs/{recipe}")
    except (ConfigError, DatasetNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    return 0


def command_line(recipe: str, config: Any) -> str:
    """The `zoo train` command that reproduces `config` (fields that differ from defaults)."""
    parts = [f"zoo train {recipe}"]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in ("progress", "resume") or value == f.default:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        parts.append(f"{_flag(f.name)} {text}")
    return " ".join(parts)
