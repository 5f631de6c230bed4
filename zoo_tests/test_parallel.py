"""Data parallelism: 4 forced CPU devices match 1, and two real processes match one.

Devices and processes are fixed when JAX starts, so these runs happen in subprocesses
(`_parallel_worker.py`), each under a timeout so that a hung collective fails the test.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

WORKER = str(Path(__file__).with_name("_parallel_worker.py"))
TIMEOUT = 240  # seconds; a loaded 2-core machine needs ~30 per run


def _env(devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "--_")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    for name in ("ZOO_COORDINATOR", "ZOO_NUM_PROCESSES", "ZOO_PROCESS_ID"):
        env.pop(name, None)
    return env


def _start(*args: str, devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        env=_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(*procs: subprocess.Popen) -> None:
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"a worker did not finish within {TIMEOUT} s (a hung collective?)")
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b, atol=1e-5):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=atol)


def test_four_devices_match_one_and_split_the_batch(tmp_path):
    out = tmp_path / "devices.json"
    _wait(_start("devices", str(out), devices=4))
    results = json.loads(out.read_text())
    for case in ("mlp-K1", "mlp-K2", "cnn-K1", "generated"):
        one, four = results[f"{case}-1"], results[f"{case}-4"]
        assert len(one["losses"]) == 4
        _close(one["losses"], four["losses"])
        _close(one["params"], four["params"])
        if case == "cnn-K1":  # BatchNorm's running statistics: over the global batch
            _close(one["model_state"], four["model_state"])
        if case != "generated":  # evaluation, split over the devices too
            _close(one["eval_loss"], four["eval_loss"])
            assert one["eval_shards"] is None and four["eval_shards"] == [[8]] * 4
    # The batch of 16 is really split, 4 examples per device (axis 1 of K stacked batches),
    # and the parameters are replicated on every device.
    assert results["mlp-K1-4"]["placed"] == {
        "spec": "P('data',)",
        "shape": [16, 8, 8],
        "shards": [[4, 8, 8]] * 4,
    }
    assert results["mlp-K2-4"]["placed"]["shards"] == [[2, 4, 8, 8]] * 4
    assert results["cnn-K1-1"]["placed"]["shards"] == [[16, 8, 8]]
    assert results["cnn-K1-4"]["param_sharding"] == "P()"
    assert results["cnn-K1-4"]["num_param_devices"] == 4
    assert (
        "6 examples on this process, which do not split evenly over its 4"
        in (results["uneven_error"])
    )


def test_two_processes_match_one_and_resume(tmp_path):
    # The single-process reference runs beside the first pair.
    single_out = tmp_path / "single.json"
    single = _start("process", str(single_out), str(tmp_path / "single"), "3")
    port = _free_port()
    workdir = str(tmp_path / "pair")
    first = [tmp_path / f"first{i}.json" for i in range(2)]
    procs = [
        _start("process", str(o), workdir, "2", f"127.0.0.1:{port}", "2", str(i))
        for i, o in enumerate(first)
    ]
    _wait(single, *procs)
    ref = json.loads(single_out.read_text())
    runs = [json.loads(o.read_text()) for o in first]
    assert [r["process"] for r in runs] == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 2 for r in runs)
    for r in runs:
        _close(r["losses"], ref["losses"][:8])
    # Disjoint shards that together are exactly each global batch.
    for b, global_batch in enumerate(ref["indices"][:8]):
        mine, theirs = runs[0]["indices"][b], runs[1]["indices"][b]
        assert not set(mine) & set(theirs)
        assert mine + theirs == global_batch

    # Only process 0 wrote: one record per step, and every process's iterator state.
    records = [json.loads(line) for line in (tmp_path / "pair" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 9))
    import zoo.train

    latest = zoo.train.latest_checkpoint(tmp_path / "pair" / "checkpoints")
    assert latest is not None and latest.name == "step_000000008.ckpt"
    header = zoo.train.read_checkpoint_header(latest)
    assert header["data_state"]["iterators"] == [{"next_index": 8}] * 2

    # A third epoch, resumed by a new pair from that checkpoint.
    port = _free_port()
    again = [tmp_path / f"again{i}.json" for i in range(2)]
    procs = [
        _start("process", str(o), workdir, "3", f"127.0.0.1:{port}", "2", str(i))
        for i, o in enumerate(again)
    ]
    _wait(*procs)
    for o in again:
        r = json.loads(o.read_text())
        assert r["steps"] == list(range(1, 13))  # earlier records are part of the history
        _close(r["losses"], ref["losses"])
        _close(r["params"], ref["params"])
        _close(r["eval_loss"], ref["eval_loss"])  # every process evaluates the whole set


def test_data_mesh_and_global_batch_errors():
    import jax

    import zoo.train

    mesh = zoo.train.data_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    with pytest.raises(ValueError, match="devices must be between 1 and"):
        zoo.train.data_mesh(jax.local_device_count() + 1)
    with pytest.raises(ValueError, match="devices must be between 1 and"):
        zoo.train.data_mesh(0)
    batch = zoo.train.global_batch({"x": np.ones((6, 2), np.float32)}, mesh)
    assert batch["x"].shape == (6, 2)
    assert batch["x"].sharding == zoo.train.batch_sharding(mesh)
    with pytest.raises(ValueError, match="'x' has no examples"):
        zoo.train.global_batch({"x": np.float32(1.0)}, mesh)


def test_initialize_distributed_arguments(monkeypatch):
    import zoo.train

    for name in ("ZOO_COORDINATOR", "ZOO_NUM_PROCESSES", "ZOO_PROCESS_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert zoo.train.initialize_distributed() is False  # a single process: nothing to join
    with pytest.raises(ValueError, match=r"missing: num_processes \(ZOO_NUM_PROCESSES\)"):
        zoo.train.initialize_distributed("127.0.0.1:1", process_id=0)
    with pytest.raises(ValueError, match="process_id must be in"):
        zoo.train.initialize_distributed("127.0.0.1:1", 2, 2)
    monkeypatch.setenv("ZOO_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="ZOO_NUM_PROCESSES must be an integer"):
        zoo.train.initialize_distributed()


def test_recipe_flags(tmp_path, capsys, monkeypatch):
    from recipes import _cli, ou_gru

    for name in ("ZOO_COORDINATOR", "ZOO_NUM_PROCESSES", "ZOO_PROCESS_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    argv = ["--batches", "200", "--coordinator=h:1", "--num-processes", "2", "--process-id", "1"]
    config = _cli.parse("ou_gru", ou_gru.Config, argv)
    assert config.batches == 200
    dist = config.distributed
    assert (dist.coordinator, dist.num_processes, dist.process_id) == ("h:1", 2, 1)
    workdir = str(tmp_path / "run")
    assert ou_gru.main(["--devices", "2", "--workdir", workdir]) == 2
    assert "--devices: devices must be between 1 and the 1 local" in capsys.readouterr().err
    assert ou_gru.main(["--num-processes", "two", "--workdir", workdir]) == 2
    assert "--num-processes" in capsys.readouterr().err  # tyro's message names the flag
    assert ou_gru.main(["--process-id", "0", "--workdir", workdir]) == 2
    assert "missing: coordinator (ZOO_COORDINATOR)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _recipe_in_a_fresh_process(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`ou_gru.main(argv)` in its own process (JAX joins a run once per process), bounded
    in time: before the fix these runs hung for JAX's 300 s, then aborted."""
    code = "import sys; from recipes import ou_gru; sys.exit(ou_gru.main(sys.argv[1:]))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "SLURM_"))}
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        env={**clean, **env},
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unresolvable_coordinator_is_one_line(tmp_path):
    argv = ["--coordinator", "no-such-host.invalid:1234", "--num-processes", "2"]
    argv += ["--process-id", "1", "--workdir", str(tmp_path / "run")]
    result = _recipe_in_a_fresh_process(argv, {})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "the host name 'no-such-host.invalid' does not resolve" in lines[0]
    assert "HOST:PORT" in lines[0]
    assert not (tmp_path / "run").exists()


def test_unreachable_coordinator_is_one_line(tmp_path):
    port = _free_port()  # nothing listens there
    argv = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1"]
    argv += ["--workdir", str(tmp_path / "run")]
    start = time.monotonic()
    result = _recipe_in_a_fresh_process(argv, {"ZOO_DISTRIBUTED_TIMEOUT": "2"})
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert f"could not reach the coordinator 127.0.0.1:{port} (process 0) within 2 s" in lines[0]
    assert "ZOO_DISTRIBUTED_TIMEOUT" in lines[0]
    assert time.monotonic() - start < 100


def test_coordinator_address_and_port_checks(monkeypatch):
    """Refused before JAX is asked to connect (so in this process, safely)."""
    import zoo.train

    for name in ("ZOO_COORDINATOR", "ZOO_NUM_PROCESSES", "ZOO_PROCESS_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    for bad in ("localhost", "localhost:0", "localhost:http", ":1234", "h:70000"):
        with pytest.raises(ValueError, match="coordinator must be HOST:PORT"):
            zoo.train.initialize_distributed(bad, 2, 1, timeout_s=1)
    with pytest.raises(ValueError, match="does not resolve"):
        zoo.train.initialize_distributed("no-such-host.invalid:1234", 2, 0)
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        zoo.train.initialize_distributed("127.0.0.1:1234", 2, 1, timeout_s=0)
    with socket.create_server(("", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConnectionError, match=f"process 0 cannot open port {port}"):
            zoo.train.initialize_distributed(f"127.0.0.1:{port}", 2, 0)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="could not reach the coordinator"):
        zoo.train.initialize_distributed(f"127.0.0.1:{_free_port()}", 2, 1, timeout_s=1)
    assert time.monotonic() - start < 10
    assert not jax.distributed.is_initialized()
