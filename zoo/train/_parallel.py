"""Data parallelism with JAX's own machinery: a one-axis device mesh, global batches built
from per-process data, replicated train states, and `jax.distributed` start-up.

Every process runs the same program. The batch's leading axis is sharded over the mesh axis
`"data"`; parameters and optimiser state are replicated. Under `jax.jit` the compiler then
partitions the step: each device computes its slice of the batch, and the gradient of the
mean loss (and BatchNorm's `lax.pmean` over the vmapped `"batch"` axis) becomes an
all-reduce, so the result equals the one-device step on the same global batch.
"""

import functools
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

DATA_AXIS = "data"

_ENV = ("ZOO_COORDINATOR", "ZOO_NUM_PROCESSES", "ZOO_PROCESS_ID")
# Launchers under which `jax.distributed.initialize()` finds everything by itself, with the
# variable that counts their tasks.
_LAUNCHERS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float | int | None = None,
) -> bool:
    """Join a multi-process run with `jax.distributed.initialize`, if there is one to join.

    Call it first, before anything touches devices (and before building
    `zoo.data.batches`, whose shard defaults read `jax.process_index()`). Each argument
    left `None` is read from `ZOO_COORDINATOR`, `ZOO_NUM_PROCESSES`, `ZOO_PROCESS_ID`. With
    none of them set, it initialises only under a multi-task launcher that JAX detects by
    itself (SLURM's `srun` with more than one task, Open MPI's `mpirun`): there
    `jax.distributed.initialize()` reads the coordinator, process count and id from the
    launcher. Otherwise the run is a single process and nothing happens.

    On CPU, processes exchange gradients through JAX's CPU collectives (Gloo), which this
    function enables unless `jax_cpu_collectives_implementation` was set already.

    !!! example

        ```bash
        # two processes on one machine (or one per host, with the first host's address)
        ZOO_COORDINATOR=127.0.0.1:1234 ZOO_NUM_PROCESSES=2 ZOO_PROCESS_ID=0 zoo train mnist_mlp &
        ZOO_COORDINATOR=127.0.0.1:1234 ZOO_NUM_PROCESSES=2 ZOO_PROCESS_ID=1 zoo train mnist_mlp
        # SLURM: one task per host (or per GPU); everything is auto-detected
        srun --nodes 2 --ntasks-per-node 1 zoo train mnist_mlp --workdir /shared/runs/mlp
        ```

    **Arguments:**

    - `coordinator`: `host:port` of process 0, reachable from every process.
    - `num_processes`: the number of processes.
    - `process_id`: this process's index, `0 <= process_id < num_processes`.
    - `timeout_s`: how long to wait for the coordinator; default `$ZOO_DISTRIBUTED_TIMEOUT`,
      else 300 seconds.

    **Returns:** `True` if this process is now part of a multi-process run (also when it
    already was), `False` for a single-process run.

    **Raises:**

    - `ValueError` naming the argument (or environment variable) that is missing or out
      of range, a coordinator that is not `HOST:PORT`, or a host name that does not resolve.
    - `ConnectionError` when process 0 cannot open the coordinator's port, or another
      process cannot reach the coordinator within `timeout_s`.

    These are checked before JAX is asked to connect: JAX aborts the whole process (no
    Python exception) when its coordinator cannot be reached.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = coordinator or os.environ.get("ZOO_COORDINATOR") or None
    num_processes = _env_int("ZOO_NUM_PROCESSES") if num_processes is None else num_processes
    process_id = _env_int("ZOO_PROCESS_ID") if process_id is None else process_id
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if all(v is None for v in given.values()):
        if not any((_env_int(v) or 0) > 1 for v in _LAUNCHERS):
            return False
        _enable_cpu_collectives()
        jax.distributed.initialize()
        return True
    missing = [f"{k} ({env})" for (k, v), env in zip(given.items(), _ENV) if v is None]
    if missing:
        raise ValueError(
            "a multi-process run needs coordinator, num_processes and process_id (flags "
            f"--coordinator, --num-processes, --process-id); missing: {', '.join(missing)}"
        )
    assert num_processes is not None and process_id is not None
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, {num_processes}) for num_processes={num_processes}, "
            f"got {process_id}"
        )
    if timeout_s is None:
        timeout_s = _env_float("ZOO_DISTRIBUTED_TIMEOUT") or _DEFAULT_TIMEOUT_S
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    timeout_s = float(timeout_s)
    assert coordinator is not None
    _preflight(coordinator, process_id, timeout_s)
    _enable_cpu_collectives()
    jax.distributed.initialize(
        coordinator, num_processes, process_id, initialization_timeout=max(1, round(timeout_s))
    )
    return True


_DEFAULT_TIMEOUT_S = 300.0  # JAX's own default wait for the other processes


def _env_float(name: str) -> float | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {text!r}") from None


def _split_address(coordinator: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[IPv6]:PORT`) -> `(host, port)`, or a `ValueError` saying what is
    wrong."""
    host, sep, port_text = coordinator.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(
            f"coordinator must be HOST:PORT (process 0's address and a port from 1 to 65535, "
            f"e.g. 10.0.0.1:1234), got {coordinator!r}"
        )
    return host, int(port_text)


def _preflight(coordinator: str, process_id: int, timeout_s: float) -> None:
    """Fail with one clear error where `jax.distributed.initialize` would abort the process
    (a C++ check failure) or hang: a host that does not resolve, a coordinator port process
    0 cannot open, a coordinator other processes cannot reach."""
    host, port = _split_address(coordinator)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(
            f"coordinator {coordinator}: the host name {host!r} does not resolve "
            f"({e.strerror}); give process 0's address (a name or IP every process can "
            "resolve) as HOST:PORT"
        ) from None
    if process_id == 0:
        # Process 0 serves the coordinator on every interface, as JAX does by default.
        try:
            with socket.create_server(("", port)):
                pass
        except OSError as e:
            raise ConnectionError(
                f"coordinator {coordinator}: process 0 cannot open port {port} on this host "
                f"({e.strerror}); choose a free port"
            ) from None
        return
    # The other processes wait for process 0, which may start a little later.
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while (left := deadline - time.monotonic()) > 0:
        try:
            with socket.create_connection((host, port), timeout=min(left, 5.0)):
                return
        except OSError as e:
            last = e
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    why = last.strerror or str(last) if last is not None else "no attempt"
    raise ConnectionError(
        f"could not reach the coordinator {coordinator} (process 0) within {timeout_s:g} s "
        f"({why}): start process 0 with the same --coordinator, check the address and port "
        "(and that no firewall blocks them), or set ZOO_DISTRIBUTED_TIMEOUT to wait longer"
    )


def _enable_cpu_collectives() -> None:
    # Without cross-process collectives a CPU all-reduce fails at run time. Gloo is the
    # default in current JAX; older versions defaulted to none.
    if getattr(jax.config, "jax_cpu_collectives_implementation", None) in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def data_mesh(devices: int | Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh, `"data"`, over the devices that share each batch.

    Devices are ordered by process, so process `k`'s devices hold the `k`-th contiguous
    slice of every global batch: the slice that `zoo.data.batches` reads on process `k`.

    **Arguments:**

    - `devices`: `None` for every device of every process; an integer `n` for the first
      `n` local devices of each process; or an explicit list of devices.

    **Returns:** a `jax.sharding.Mesh` with the one axis `"data"` of `AxisType.Auto`, so
    that the compiler places the step's intermediates (the default axis type, `Explicit`,
    would make sharding part of every array's type).

    **Raises:** `ValueError` if `devices` is below 1 or more than a process has.
    """
    if devices is None:
        chosen = list(jax.devices())
    elif isinstance(devices, int):
        local = jax.local_device_count()
        if not 1 <= devices <= local:
            hint = ""
            if jax.default_backend() == "cpu":
                hint = (
                    "; for more CPU devices set XLA_FLAGS=--xla_force_host_platform_device_count"
                    f"={devices} before JAX starts"
                )
            raise ValueError(
                f"devices must be between 1 and the {local} local device(s) of this process, "
                f"got {devices}{hint}"
            )
        chosen = []
        for process in range(jax.process_count()):
            mine = [d for d in jax.devices() if d.process_index == process]
            chosen += sorted(mine, key=lambda d: d.id)[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must not be empty")
    chosen = sorted(chosen, key=lambda d: (d.process_index, d.id))
    return jax.make_mesh(
        (len(chosen),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=chosen
    )


def batch_sharding(mesh: Mesh, *, stacked: bool = False) -> NamedSharding:
    """The sharding of a batch: its batch axis split over `"data"`, the rest whole.

    **Arguments:**

    - `mesh`: a mesh from [`zoo.train.data_mesh`][].
    - `stacked`: for K stacked batches `(K, batch, ...)`: split axis 1, not 0.
    """
    spec = PartitionSpec(None, DATA_AXIS) if stacked else PartitionSpec(DATA_AXIS)
    return NamedSharding(mesh, spec)


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of parameters, optimiser state and metrics: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


@functools.lru_cache(maxsize=64)
def _placement(mesh: Mesh, stacked: bool) -> tuple[NamedSharding, int, bool]:
    # Once per mesh: building the sharding and counting devices cost more than the transfer
    # of a small batch.
    sharding = batch_sharding(mesh, stacked=stacked)
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    return sharding, local, sharding.is_fully_addressable


def global_batch(batch: Mapping[str, Any], mesh: Mesh, *, stacked: bool = False) -> dict:
    """Assemble this process's part of a batch into one global `jax.Array` per entry.

    Uses `jax.make_array_from_process_local_data`: each process passes the rows it read
    (its shard of the global batch, e.g. from `zoo.data.batches`), and the result has the
    global batch size, split over the mesh's `"data"` axis. (`jax.device_put` cannot place
    per-process data on devices of other processes.) With one process the local batch is
    the global one, placed with one `jax.device_put`.

    **Arguments:**

    - `batch`: a dict of host arrays with a leading batch axis, `(local_batch, ...)`, or
      `(K, local_batch, ...)` when `stacked`.
    - `mesh`: a mesh from [`zoo.train.data_mesh`][].
    - `stacked`: the arrays hold K stacked batches; the batch axis is axis 1.

    **Returns:** a dict of `jax.Array`s with sharding [`zoo.train.batch_sharding`][].

    **Raises:** `ValueError` if the local batch does not split evenly over this process's
    devices of the mesh.
    """
    sharding, local_devices, addressable = _placement(mesh, stacked)
    axis = 1 if stacked else 0
    for name, value in batch.items():
        shape = np.shape(value)
        if len(shape) <= axis or shape[axis] % local_devices:
            rows = shape[axis] if len(shape) > axis else "no"
            raise ValueError(
                f"batch entry {name!r} has {rows} examples on this process, which do not split "
                f"evenly over its {local_devices} device(s) of the mesh: use a batch size "
                f"divisible by the number of devices ({mesh.devices.size} in all), or fewer "
                "devices"
            )
    if addressable:
        # One process: local is global, and one batched `device_put` is ~70 us faster per
        # batch than an array at a time (measured on 2 CPU cores), which a K=1 loop feels.
        return jax.device_put(dict(batch), sharding)
    out = {}
    for name, value in batch.items():
        if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
            out[name] = value  # already a global batch
        else:
            out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return out


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copy every array of `tree` (the same on every process) onto every device of `mesh`.

    **Arguments:**

    - `tree`: a PyTree, e.g. a train state or its list of array leaves; non-array leaves
      are kept as they are.
    - `mesh`: a mesh from [`zoo.train.data_mesh`][].

    **Returns:** the tree with each array a new copy of sharding
    [`zoo.train.replicated_sharding`][] (safe to donate: the input is not aliased).
    """
    sharding = replicated_sharding(mesh)

    def place(x):
        if _is_key(x):
            # `device_put` refuses typed keys for devices of other processes; their raw
            # data goes through, and is wrapped again where it lives.
            data = jax.device_put(jr.key_data(x), sharding, may_alias=False)
            return _wrap_key(data, jr.key_impl(x))
        if isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return jax.device_put(x, sharding, may_alias=False)
        return x

    return jax.tree.map(place, tree)


def _wrap_key(data: jax.Array, impl: Any) -> jax.Array:
    return jax.jit(lambda d: jr.wrap_key_data(d, impl=impl))(data)


def allgather_json(obj: Any) -> list[Any]:
    """Every process's `obj` (JSON-serialisable), in process order; a collective: every
    process must call it at the same point."""
    import json

    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [
        json.loads(bytes(row[: int(n)]).decode())
        for row, n in zip(gathered, np.ravel(np.asarray(sizes)))
    ]
