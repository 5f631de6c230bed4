"""Run-steering fields: config entries that steer a run without changing its result."""

import dataclasses
from typing import Any

STEERING = "zoo_steering"

# `fit`'s own arguments that a config may repeat: they steer the run, never change it.
# (`devices` too: the result is the same to float tolerance on any number of devices.)
_FIT_ARGUMENTS = frozenset({"resume", "progress", "workdir", "keep", "log_every", "devices"})


def steering_field(default: Any = dataclasses.MISSING, *, default_factory: Any = None, **kwargs):
    """A dataclass field marked as only steering the run (resume, progress, workdir, trackers,
    publish, ...), so that `fit`'s resume check ignores it.

    !!! example

        ```python
        @dataclasses.dataclass(frozen=True)
        class Config:
            learning_rate: float = 1e-3
            resume: bool = zoo.train.steering_field(False)
        ```

    **Arguments:**

    - `default`, `default_factory`: as `dataclasses.field`.
    - `kwargs`: any other `dataclasses.field` argument; `metadata` is extended, not replaced.

    **Returns:** a `dataclasses.Field` whose metadata holds `{"zoo_steering": True}`.
    """
    metadata = {**kwargs.pop("metadata", {}), STEERING: True}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def is_steering(field: dataclasses.Field) -> bool:
    """Whether a dataclass field was declared with [`zoo.train.steering_field`][]."""
    return bool(field.metadata.get(STEERING, False))


def steering_names(config: Any) -> frozenset[str]:
    """The top-level config entries that may differ on resume: a dataclass config's steering
    fields (nested dataclasses' too, as `outer.inner`), and `fit`'s own run-control
    arguments for a mapping."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        return _FIT_ARGUMENTS
    names = set()
    for f in dataclasses.fields(config):
        if is_steering(f):
            names.add(f.name)
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            names.update(f"{f.name}.{inner}" for inner in steering_names(value))
    return frozenset(names)
