"""Data-parallel scaling: the MLP step's throughput on 1, 2 and 4 devices.

Run `python -m benchmarks.scaling` (`--quick` for a smoke run). The 784-512-512-10 MLP of
the `mnist_mlp` recipe (Adam, cross-entropy) trains on synthetic batches through `fit`'s own
path: K host batches stacked, placed as one global batch split over the mesh's `"data"`
axis ([`zoo.train.global_batch`][]), K steps in one compiled `lax.scan`. On a CPU the
devices are forced with `XLA_FLAGS=--xla_force_host_platform_device_count=4` (they share
the machine's cores); meshes of 1, 2 and 4 of them take turns in one process, so that load
from other processes hits them alike. A second process without forced devices measures the
plain one-device case, to show what forcing costs. On a GPU machine, the accelerator's
devices are used as they are.

Prints a table (`--json PATH` also writes the numbers).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MLP = {"in_size": 784, "num_classes": 10, "width": 512, "depth": 2}


def _worker(device_counts: list[int], batch_sizes: list[int], k: int, rounds: int) -> dict:
    import jax
    import jax.random as jr
    import numpy as np
    import optax

    import zoo
    import zoo.train as zt
    from zoo.train._fit import _Runner

    rng = np.random.default_rng(0)
    results = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}
    results["cpu_count"] = os.cpu_count()
    for batch in batch_sizes:
        host = {
            "image": rng.random((k, batch, 784), dtype=np.float32),
            "label": rng.integers(0, 10, (k, batch)).astype(np.int32),
        }
        runs = {}
        for n in device_counts:
            model = zoo.MLP(**MLP, key=jr.PRNGKey(0))
            optimizer = optax.adam(1e-3)
            step = zt.TrainStep(zt.classification_loss(), optimizer)
            state = zt.init_train_state(model, optimizer, key=jr.PRNGKey(1))
            runs[n] = _Runner(step, state, zt.data_mesh(jax.devices()[:n]))
            jax.block_until_ready(runs[n].scan(host))  # compile, warm up
        best = dict.fromkeys(device_counts, float("inf"))
        for _ in range(rounds):
            for n, runner in runs.items():  # turns: load hits every device count alike
                t = time.perf_counter()
                jax.block_until_ready(runner.scan(host))
                best[n] = min(best[n], time.perf_counter() - t)
        results[f"batch_{batch}"] = {
            str(n): {"step_ms": 1e3 * t / k, "samples_per_s": k * batch / t}
            for n, t in best.items()
        }
    return results


def _run_worker(devices: int | None, counts, batches, k, rounds) -> dict:
    env = dict(os.environ)
    if devices is not None:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        ).strip()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        "--worker",
        ",".join(map(str, counts)),
        "--batch",
        ",".join(map(str, batches)),
        "--k",
        str(k),
        "--rounds",
        str(rounds),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--batch", default="100,1000", help="global batch sizes")
    parser.add_argument("--k", type=int, default=None, help="steps per dispatch")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    k = args.k or (5 if args.quick else 20)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.worker is not None:
        counts = [int(n) for n in args.worker.split(",")]
        print(json.dumps(_worker(counts, batches, k, rounds)))
        return

    import jax

    if jax.default_backend() == "cpu":
        forced = _run_worker(4, [1, 2, 4], batches, k, rounds)
        plain = _run_worker(None, [1], batches, k, rounds)
    else:  # an accelerator's own devices
        counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
        forced = _run_worker(None, counts, batches, k, rounds)
        plain = None
    results = {"k": k, "rounds": rounds, "forced": forced, "plain": plain}

    print(f"MLP 784-512-512-10 step, K={k} per dispatch, best of {rounds} rounds")
    print(f"{forced['backend']} ({forced['device_kind']}), {forced['cpu_count']} CPU cores")
    for batch in batches:
        rows = forced[f"batch_{batch}"]
        base = rows["1"]["samples_per_s"]
        print(f"  global batch {batch}:")
        if plain is not None:
            p = plain[f"batch_{batch}"]["1"]
            print(
                f"    1 device (not forced): {p['step_ms']:7.2f} ms/step "
                f"{p['samples_per_s']:9.0f} samples/s"
            )
        for n, r in rows.items():
            print(
                f"    {n} device(s):           {r['step_ms']:7.2f} ms/step "
                f"{r['samples_per_s']:9.0f} samples/s  x{r['samples_per_s'] / base:.2f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
