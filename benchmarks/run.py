"""zoo against its peers and the hardware limit, measured side by side in one run.

    python -m benchmarks.run            # the full run (about 10 minutes on 2 cores)
    python -m benchmarks.run --quick    # a smoke run, under 2 minutes
    python -m benchmarks.run --plan gpu # what benchmarks/gpu.sh runs on a GPU machine
    python -m benchmarks.run --plan tiny --workloads mlp --contenders zoo,zoo_jit  # tests
    nox -s bench                        # the full run in a fresh `bench` environment

Writes `results.md` (the tables) and `results.json` (every number) into `--out` (default
`benchmarks/results/`). Workloads: the 784-512-512-10 MLP and the BatchNorm ConvNet on
Fashion-MNIST (Adam 1e-3, batch 100), the GRU on the OU task (batch 64, 10 time steps, Adam
1e-4) and the data pipeline alone. Contenders (`benchmarks/contenders/`): zoo's default
path and its plain `filter_jit` loop, raw JAX, Flax NNX three ways, PyTorch eager, and the
roofline. All start from zoo's initial weights and see the same batches in the same order;
the run checks that their step-0 losses agree.

For each workload, after a warm-up, every contender trains on the same in-memory batches
in timed blocks (blocking once at the end of a block), the contenders interleaved and their
order rotated each repeat; steps/s is the median over the repeats (zoo's default goes
through `fit` on host batches; on the OU task it generates every batch in the step, so the
others are charged for making the same batches). Then each trains one epoch from the input
pipeline (data included). Import times and the time to the first step with a cold and a
warm compilation cache are measured in fresh processes. `--quick` uses fewer repeats and a
part of each epoch (the epoch time is scaled up and marked so).
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import zoo
from benchmarks import construction, contenders, engine, pipeline
from benchmarks.contenders import _workloads as W, roofline

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # relative difference of step-0 losses above which the run is flagged
CHECK_STEPS = 5  # steps the one-call-per-step contenders run before timing
# Slowest over fastest block above which a contender's timing counts as disrupted (by other
# processes, or a full garbage collection): shown with a dagger, judged only if both agree.
SPREAD_LIMIT = 3.0
KERNELS = "kernels alone"  # the step's own matmuls or convolutions, timed among the contenders


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long to measure, per workload: timed blocks per contender (`repeats`, for all),
    steps per block, batches per epoch measurement (all multiples of zoo's K) and timed
    epochs per contender.

    A one-call-per-step contender whose warm-up block takes longer than `max_block_s` is
    timed on fewer steps (so that its epoch takes about `max_epoch_s`, too) and marked so:
    on a loaded machine PyTorch's threads can slow down a hundredfold, and the run should
    still finish.
    """

    repeats: int
    block: dict[str, int]
    epoch: dict[str, int]
    epoch_repeats: dict[str, int]
    max_block_s: float
    max_epoch_s: float
    import_repeats: int
    first_step: tuple[tuple[str, str], ...]  # (workload, contender) timed in fresh processes
    dense_repeats: int = 30  # calls timed by the MLP's matmul-bound diagnostic
    conv_repeats: int = 5  # and by the ConvNet's convolution diagnostic
    pipeline: bool = True  # whether to time the data pipeline alone
    imports: tuple[str, ...] | None = None  # modules whose import is timed (None: the default)
    # Models whose construction is timed in fresh processes (None: every registered model).
    construction: tuple[str, ...] | None = ("mlp_mnist",)


# Quick: one dispatch of zoo's K per block and per epoch, zoo alone in fresh processes.
QUICK = Plan(
    repeats=5,
    block={"mlp": 50, "cnn": 10, "gru": 100},
    epoch={"mlp": 50, "cnn": 10, "gru": 100},
    epoch_repeats={"mlp": 1, "cnn": 1, "gru": 1},
    max_block_s=2.0,
    max_epoch_s=3.0,
    import_repeats=1,
    first_step=(("mlp", "zoo"),),
)
FULL = Plan(
    repeats=7,
    block={"mlp": 200, "cnn": 60, "gru": 1000},
    epoch={"mlp": 600, "cnn": 600, "gru": 1000},
    epoch_repeats={"mlp": 2, "cnn": 1, "gru": 3},  # the ConvNet's epoch is the long one
    max_block_s=10.0,
    max_epoch_s=60.0,
    import_repeats=3,
    first_step=tuple(("mlp", k) for k in contenders.KEYS) + (("cnn", "zoo"), ("gru", "zoo")),
    construction=None,
)
# `benchmarks/gpu.sh` on a GPU machine: every contender and workload in a few minutes,
# including the first-step timings of zoo's K-step dispatch and its one-call-per-step loop.
GPU = Plan(
    repeats=5,
    block={"mlp": 200, "cnn": 60, "gru": 500},
    epoch={"mlp": 200, "cnn": 60, "gru": 500},
    epoch_repeats={"mlp": 1, "cnn": 1, "gru": 1},
    max_block_s=5.0,
    max_epoch_s=10.0,
    import_repeats=1,
    # Each pair is two fresh processes (cold and warm cache), a CUDA start-up each.
    first_step=(("mlp", "zoo"), ("mlp", "zoo_jit"), ("gru", "zoo"), ("gru", "zoo_jit")),
)
# The smallest end-to-end run (tests of `benchmarks/gpu.sh` on the CPU): one dispatch a block.
TINY = Plan(
    repeats=2,
    block={"mlp": 50, "cnn": 10, "gru": 100},
    epoch={"mlp": 50, "cnn": 10, "gru": 100},
    epoch_repeats={"mlp": 1, "cnn": 1, "gru": 1},
    max_block_s=1.0,
    max_epoch_s=1.0,
    import_repeats=1,
    first_step=(("mlp", "zoo"),),
    dense_repeats=3,
    conv_repeats=2,
    pipeline=False,
    imports=("zoo",),
)
PLANS = {"quick": QUICK, "full": FULL, "gpu": GPU, "tiny": TINY}


# --- one workload, every contender -----------------------------------------------------------


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _rotated(items: list, r: int) -> list:
    r %= len(items)
    return items[r:] + items[:r]


def _generated(train_key, n: int):
    """The OU batches, made when the first is asked for (so inside the timed epoch)."""
    yield from W.ou_batches(train_key, n)


def bench_workload(name: str, plan: Plan, keys: tuple[str, ...] = contenders.KEYS) -> dict:
    """Train workload `name` with every available contender of `keys`; returns their
    numbers."""
    t0 = time.perf_counter()
    s = contenders.setup(name)
    wl = s.workload
    k, block, epoch_n = wl.steps_per_dispatch, plan.block[name], plan.epoch[name]
    for n in (block, epoch_n):
        if n % k:
            raise ValueError(f"{name}: {n} steps is not a multiple of zoo's K={k}")
    skipped = {key: why for key in keys if (why := contenders.available(key))}
    runners = {key: contenders.make(key, s) for key in keys if key not in skipped}
    print(f"\n== {wl.title}: batch {wl.batch_size}, Adam {wl.learning_rate:g}, zoo K={k}")
    for key, why in skipped.items():
        print(f"  skipped {key}: {why}")

    # The first batches of the epoch, in the pipeline's order (OU: zoo's own key chain).
    need = max(k, block, epoch_n if name == "gru" else 0)
    if name == "gru":
        host = W.ou_batches(s.train_key, need)
    else:
        host = W.take(W.mnist_batches(wl.batch_size), need)

    # Same weights and data, so the same losses; this also compiles every step. zoo's default
    # runs one dispatch (K steps), the others a few steps.
    losses, first_k = {}, {}
    for key, c in runners.items():
        t = time.perf_counter()
        n = k if key == "zoo" else min(k, CHECK_STEPS)
        losses[key] = c.losses(host[:n])
        first_k[key] = time.perf_counter() - t
    ref = losses.get("zoo", next(iter(losses.values())))
    deviation = {key: float(abs(v[0] - ref[0]) / abs(ref[0])) for key, v in losses.items()}
    bad = {key: d for key, d in deviation.items() if d > TOLERANCE}
    if bad:
        print(f"  WARNING: step-0 losses differ from zoo's by more than {TOLERANCE}: {bad}")

    phases = {"check_s": time.perf_counter() - t0}
    # zoo's OU step generates its batches: the others pay for theirs too, made ahead in one
    # compiled call (the cheapest way a JAX user would), so both sides do the same work.
    generate = name == "gru"

    steps = dict.fromkeys(runners, block)  # per contender: fewer for a very slow one

    def steady(key: str):
        c = runners[key]
        if not generate or key == "zoo":
            return c.run
        return lambda: (c.load(W.ou_batches(s.train_key, block)[: steps[key]]), c.run())

    if generate:  # compile the generator for both sizes before any timing
        for n in (block, epoch_n):
            W.ou_batches(s.train_key, n)
    for key, c in runners.items():
        if isinstance(c, contenders.PerStep):
            probe = min(block, CHECK_STEPS)
            c.load(host[:probe])
            per_step = _timed(c.run) / probe
            if per_step * block > plan.max_block_s:
                steps[key] = max(1, int(plan.max_block_s / per_step))
        c.load(host[: steps[key]])
        c.run()  # warm-up: caches, allocator, threads
    # The step's own kernels alone (the MLP's matmuls, the ConvNet's convolutions), timed in
    # the same rounds as the contenders: the bound targets compare zoo's step with them, and
    # timed minutes apart the two drift apart with the machine.
    kernels = roofline.kernels_alone(s.weights, wl.batch_size)
    calls = steps.get("zoo", block)
    rounds = [*runners, KERNELS] if kernels else list(runners)
    if kernels:
        fn, args = kernels
        jax.block_until_ready(fn(*args))

        def kernels_block():
            for _ in range(calls):
                out = fn(*args)
            jax.block_until_ready(out)

    times: dict[str, list[float]] = {key: [] for key in rounds}
    for r in range(plan.repeats):
        for key in _rotated(rounds, r):
            times[key].append(_timed(kernels_block if key == KERNELS else steady(key)))

    phases["steady_s"] = time.perf_counter() - t0 - phases["check_s"]
    sps = {key: steps[key] / float(np.median(times[key])) for key in runners}
    epoch_steps = {
        key: epoch_n
        if steps[key] == block
        else max(1, min(epoch_n, int(plan.max_epoch_s * sps[key])))
        for key in runners
    }
    epoch_times: dict[str, list[float]] = {key: [] for key in runners}
    for r in range(plan.epoch_repeats[name]):
        for key in _rotated(list(runners), r):
            if generate:
                data = _generated(s.train_key, epoch_n)
            else:
                data = W.mnist_batches(wl.batch_size)
            n = epoch_steps[key]
            epoch_times[key].append(_timed(lambda: runners[key].epoch(data, n)))

    phases["epoch_s"] = time.perf_counter() - t0 - phases["check_s"] - phases["steady_s"]
    out = {}
    for key, c in runners.items():
        epoch_s = float(np.median(epoch_times[key])) * wl.epoch_steps / epoch_steps[key]
        out[key] = {
            "label": c.label,
            "steps_per_s": sps[key],
            "best_steps_per_s": steps[key] / min(times[key]),
            "worst_steps_per_s": steps[key] / max(times[key]),
            "samples_per_s": sps[key] * wl.batch_size,
            "block_steps": steps[key],
            "block_s": times[key],
            "spread": max(times[key]) / min(times[key]),
            "shortened": steps[key] != block,
            "disrupted": steps[key] != block or max(times[key]) > SPREAD_LIMIT * min(times[key]),
            "epoch_batches_run": epoch_steps[key],
            "epoch_s": epoch_s,
            "epoch_samples_per_s": wl.epoch_steps * wl.batch_size / epoch_s,
            "check_s": first_k[key],  # compilation and the first steps, in this process
            "check_losses": [float(x) for x in losses[key][:CHECK_STEPS]],
            "loss_step0": float(losses[key][0]),
            "step0_deviation": deviation[key],
        }
        print(
            f"  {c.label:40s} {sps[key]:9.1f} steps/s  epoch {epoch_s:7.2f} s  "
            f"(spread {out[key]['spread']:.2f}, step-0 loss {losses[key][0]:.6f})"
        )
    result = {
        "title": wl.title,
        "settings": dataclasses.asdict(wl),
        "block_steps": block,
        "repeats": plan.repeats,
        "epoch_batches_run": epoch_n,
        "epoch_scaled": epoch_n != wl.epoch_steps,
        "flops_per_step": roofline.train_flops(s.weights, wl.batch_size),
        "contenders": out,
        "skipped": skipped,
        "step0_ok": not bad,
    }
    if kernels:
        result["kernels_alone"] = {
            "ms": 1e3 * float(np.median(times[KERNELS])) / calls,
            "calls": calls,
            "spread": max(times[KERNELS]) / min(times[KERNELS]),
        }
    if isinstance(s.weights, W.ConvNetWeights):
        result["conv_diagnostic"] = roofline.conv_diagnostic(
            s.weights, wl.batch_size, plan.conv_repeats
        )
    if isinstance(s.weights, W.MLPWeights):
        result["dense_diagnostic"] = roofline.dense_diagnostic(
            s.weights, wl.batch_size, plan.dense_repeats
        )
    result["wall_s"] = time.perf_counter() - t0
    result["phases_s"] = phases
    print(
        f"  ({result['wall_s']:.0f} s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
        + ")"
    )
    return result


def add_roofline(result: dict, gflops: float) -> None:
    """The roofline row of a workload and every contender's fraction of it."""
    steps = gflops * 1e9 / result["flops_per_step"]
    result["roofline"] = {
        "gflops": gflops,
        "steps_per_s": steps,
        "samples_per_s": steps * result["settings"]["batch_size"],
    }
    for c in result["contenders"].values():
        c["vs_roofline"] = c["steps_per_s"] / steps
    rates = {k: c["steps_per_s"] for k, c in result["contenders"].items()}
    result["ratios"] = {a: {b: ra / rb for b, rb in rates.items()} for a, ra in rates.items()}


# --- fresh processes: import time, time to the first step --------------------------------------


def import_times(repeats: int, modules=("jax", "zoo", "flax.nnx", "torch")) -> dict:
    """Seconds to import each of `modules` in a fresh interpreter (best of `repeats`)."""
    out = {}
    for module in modules:
        code = (
            f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
        )
        best = None
        for _ in range(repeats):
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if p.returncode:
                best = None
                break
            t = float(p.stdout.strip().splitlines()[-1])
            best = t if best is None else min(best, t)
        out[module] = best
    print("import: " + ", ".join(f"{m} {t:.2f} s" for m, t in out.items() if t is not None))
    return out


def first_step(workload: str, key: str, cache: str | None) -> dict:
    """In this (fresh) process: build contender `key` from zoo's model and train until its
    first result is ready (one dispatch: K steps for zoo's default, one for the others).

    Imports are done by then (their cost is `import_times`'), and so is zoo's model, which
    every contender starts from.
    """
    why = contenders.available(key)
    if why:
        return {"error": why}
    if cache is not None:
        import zoo.train

        zoo.train.enable_compilation_cache(cache)  # what the recipes do; plain JAX config
    s = contenders.setup(workload)
    n = s.workload.steps_per_dispatch if key == "zoo" else 1
    batches = W.synthetic(workload, s.workload.batch_size, n)
    t = time.perf_counter()
    contenders.make(key, s).losses(batches)
    return {"first_step_s": time.perf_counter() - t, "steps": n}


def first_step_times(pairs) -> dict:
    """Time to the first step in fresh processes, with a cold and then a warm JAX cache."""
    out: dict[str, dict] = {}
    for workload, key in pairs:
        if contenders.available(key):
            continue
        runs = {}
        with tempfile.TemporaryDirectory() as cache:
            for which in ("cold", "warm") if key != "torch" else ("eager",):
                args = [sys.executable, "-m", "benchmarks.run", "--first-step", workload, key]
                args.append(cache if key != "torch" else "none")
                t = time.perf_counter()
                p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
                wall = time.perf_counter() - t
                if p.returncode:
                    runs[which] = {"error": p.stderr.strip().splitlines()[-1:]}
                    continue
                runs[which] = {**json.loads(p.stdout.strip().splitlines()[-1]), "process_s": wall}
        out[f"{workload}/{key}"] = runs
        print(
            f"first step {workload}/{key}: "
            + ", ".join(
                f"{w} {r['first_step_s']:.2f} s (process {r['process_s']:.2f} s)"
                for w, r in runs.items()
                if "first_step_s" in r
            )
        )
    return out


def engine_extras(quick: bool) -> dict:
    """Numbers only `benchmarks/engine.py` measures (full run only): the per-step dispatch
    cost, and its time to the first step with no cache, a cold and a warm one."""
    out: dict = {}
    if quick:  # too slow for the quick run's two minutes
        return {}
    parts = {"dispatch": lambda: engine.dispatch_cost(False), "first_step": engine.first_step_times}
    for name, fn in parts.items():
        # engine.py is another module's: a change there should cost this section, not the run.
        try:
            out[name] = fn()
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"engine.{name} failed: {out[name]['error']}")
    return out


# --- targets and reports ---------------------------------------------------------------------


def targets(results: dict) -> list[dict]:
    """The issue's targets, each with its measured ratio and whether it is met.

    Against a contender whose timing other processes disrupted (†), a target is judged only
    if it holds whichever of that contender's blocks is taken (its fastest and its slowest),
    and never against one that was slow throughout (its blocks shortened).
    """
    wl = results["workloads"]
    rows = []

    def contender(name, key) -> dict:
        return wl.get(name, {}).get("contenders", {}).get(key, {})

    def add(text, value, goal, met, note=""):
        rows.append({"target": text, "value": value, "goal": goal, "met": met, "note": note})

    def versus(text, name, key, goal):
        zoo, other = contender(name, "zoo"), contender(name, key)
        if not zoo or not other:
            return add(text, None, goal, None, f"{key} did not run")
        value = zoo["steps_per_s"] / other["steps_per_s"]
        if not other["disrupted"]:
            return add(text, value, goal, value >= goal)
        if other["shortened"]:  # slow throughout: nothing to bracket it with
            return add(text, value, goal, None, f"not judged: {key} †")
        low = zoo["steps_per_s"] / other["best_steps_per_s"]
        high = zoo["steps_per_s"] / other["worst_steps_per_s"]
        met = True if low >= goal else False if high < goal else None
        add(text, value, goal, met, f"{key} † between {low:.2f}x and {high:.2f}x")

    def ahead(text, name, goal=1.0):
        """zoo at least `goal` times every other contender of workload `name`; returns the
        contender the ratio was taken against (None when none ran)."""
        others = [k for k in wl[name]["contenders"] if k != "zoo"]
        if not others or not contender(name, "zoo"):
            add(text, None, goal, None, "no contender ran")
            return None
        zoo = contender(name, "zoo")["steps_per_s"]
        # Measured at its best for a disrupted contender, at its median for the others.
        rate = {
            k: contender(name, k)[
                "best_steps_per_s" if contender(name, k)["disrupted"] else "steps_per_s"
            ]
            for k in others
        }
        best = max(others, key=lambda k: rate[k])
        judged = [k for k in others if not contender(name, k)["disrupted"]]
        behind = [k for k in judged if zoo < goal * contender(name, k)["steps_per_s"]]
        closest = max(behind or [best], key=lambda k: contender(name, k)["steps_per_s"])
        value = zoo / contender(name, closest)["steps_per_s"]
        shortened = [k for k in others if contender(name, k)["shortened"]]
        if behind:
            met = False
        elif zoo >= goal * rate[best] and not shortened:
            met = True
        else:
            met = None
        note = f"closest: {closest}"
        if met is None:
            note += f"; not judged: {', '.join(shortened or [best])} †"
        add(text, value, goal, met, note)
        return closest

    def bound(text, name, key, goal, what):
        """zoo's steps/s times the ms of its own kernels alone (`r[key]`): the fraction of
        the bound those kernels set; at least `goal`."""
        zoo = contender(name, "zoo")
        part = wl.get(name, {}).get(key)
        interleaved = wl.get(name, {}).get("kernels_alone")
        if not zoo or not (part or interleaved):
            return add(text, None, goal, None, f"{what} not measured")
        if interleaved:  # timed in the same rounds as the step
            ms = interleaved["ms"]
        else:  # results from before they were
            ms = part["xla_ms"] if key == "dense_diagnostic" else _own_conv_ms(part)
        value = zoo["steps_per_s"] * ms / 1e3
        step_ms = 1e3 / zoo["steps_per_s"]
        add(
            text,
            value,
            goal,
            value >= goal,
            f"{what} {ms:.2f} ms, zoo's step {step_ms:.2f} ms = {step_ms / ms:.2f}x them",
        )

    # The targets (#17): ratios from one run.
    if "mlp" in wl:
        bound(
            "MLP: zoo >= 0.95x its own matmuls' bound",
            "mlp",
            "dense_diagnostic",
            0.95,
            "matmuls alone",
        )
        versus("MLP: zoo >= 1.5x PyTorch eager", "mlp", "torch", 1.5)
    if "gru" in wl:
        ahead("GRU-OU: zoo >= 2x the best other contender", "gru", 2.0)
    if "cnn" in wl:
        closest = ahead("ConvNet: zoo >= 1.1x every contender", "cnn", 1.1)
        # A miss says how far XLA's convolutions alone would get: the ceiling of any rewrite
        # of zoo's step around them (below the goal, only faster convolutions can meet it).
        row, xla_ms = rows[-1], wl["cnn"].get("conv_diagnostic", {}).get("xla_ms")
        rival = contender("cnn", closest) if closest else {}
        if row["met"] is False and xla_ms and rival:
            row["note"] += (
                f"; XLA's convolutions alone take {xla_ms:.2f} ms, {closest}'s whole step "
                f"{1e3 / rival['steps_per_s']:.2f} ms: a step of nothing but them would be "
                f"{1e3 / xla_ms / rival['steps_per_s']:.2f}x"
            )
        # Time outside the convolutions at PyTorch's level: step <= 1.15x the convs alone.
        bound(
            "ConvNet: zoo's step <= 1.15x its convolutions alone",
            "cnn",
            "conv_diagnostic",
            1 / 1.15,
            "fastest convs alone",
        )
    if contender("mlp", "zoo") and results.get("pipeline"):
        consume = contender("mlp", "zoo")["samples_per_s"]
        value = results["pipeline"]["images_per_s"] / consume
        add(
            "Pipeline >= 10x the MLP step's images/s",
            value,
            10.0,
            value >= 10.0,
            f"MLP consumes {consume:,.0f} images/s",
        )
    return rows


def _own_conv_ms(d: dict) -> float:
    """The conv layers alone as zoo can run them: the faster of XLA's convolution and
    `conv_gemm` (whichever the ConvNet picks), outside a scan."""
    return min(d[k] for k in ("xla_ms", "gemm_ms") if k in d)


def machine() -> dict:
    """The machine and software this run measured."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in (
        "equinox-zoo",
        "jax",
        "jaxlib",
        "equinox",
        "optax",
        "grain",
        "flax",
        "torch",
        "numpy",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_device": str(jax.devices()[0].device_kind),
        "versions": versions,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _f(x, digits=0, suffix="") -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}{suffix}"


SHORT = {
    "zoo": "zoo",
    "zoo_jit": "zoo jit",
    "raw_jax": "raw",
    "flax_jit": "nnx.jit",
    "flax_cached": "cached",
    "flax_split": "split",
    "torch": "torch",
}


def dispatch_table(results: dict) -> list[str]:
    """Markdown lines: per workload, every contender's steps/s, zoo's K steps per dispatch
    against its own one-call-per-step loop, and the time to the first step (fresh process,
    cold compilation cache)."""
    device = results["machine"]["jax_device"]
    lines = [
        f"## Steps per second on {device}: K steps per dispatch against one call per step",
        "",
        "| workload | "
        + " | ".join(SHORT.get(k) or k for k in contenders.KEYS)
        + " | K | zoo ÷ zoo jit | first step zoo / zoo jit, s |",
        "| --- |" + " ---: |" * (len(contenders.KEYS) + 3),
    ]
    for name, r in results["workloads"].items():
        c = r["contenders"]
        cells = [_f(c[k]["steps_per_s"], 1) if k in c else "n/a" for k in contenders.KEYS]
        ratio = (
            _f(c["zoo"]["steps_per_s"] / c["zoo_jit"]["steps_per_s"], 2, "x")
            if "zoo" in c and "zoo_jit" in c
            else "n/a"
        )
        first = [
            _f(
                (results["first_step"].get(f"{name}/{k}", {}).get("cold") or {}).get(
                    "first_step_s"
                ),
                2,
            )
            for k in ("zoo", "zoo_jit")
        ]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {r['settings']['steps_per_dispatch']} | {ratio} | {' / '.join(first)} |"
        )
    return lines + [""]


def markdown(results: dict) -> str:
    """The tables of `results.md`."""
    m = results["machine"]
    v = m["versions"]
    lines = [
        "# zoo benchmarks",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, "
        f"jax {v['jax']} ({m['jax_device']}), equinox {v['equinox']}, optax {v['optax']}, "
        f"grain {v['grain']}, flax {v['flax']}, torch {v['torch']}; {m['date']}. "
        f"Load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}"
        + (
            f" (**{results.get('plan_name', 'quick')} run**: few repeats, partial epochs "
            "scaled up)."
            if results["quick"]
            else "."
        ),
        "",
    ]
    # The 1-minute load just before the run: afterwards it counts this run's own threads.
    busy = (m["loadavg_start"] or [0.0])[0]
    if busy > 0.5 * m["cores"]:
        lines += [
            f"**Other processes were running (1-minute load average {busy:.1f} on "
            f"{m['cores']} cores): these timings are noisy, and PyTorch's OpenMP threads, "
            "which wait for each other at every operation, suffer most.**",
            "",
        ]
    for name, r in results["workloads"].items():
        s = r["settings"]
        roof = r["roofline"]
        lines += [
            f"## {r['title']}",
            "",
            f"Adam {s['learning_rate']:g}, batch {s['batch_size']}, float32; epoch = "
            f"{s['epoch_steps']} batches"
            + (f" (timed on {r['epoch_batches_run']}, scaled)" if r["epoch_scaled"] else "")
            + f". Steady state: median of {r['repeats']} blocks of {r['block_steps']} steps "
            "(spread: slowest ÷ fastest block). "
            f"Roofline: {r['flops_per_step'] / 1e9:.3g} GFLOP/step at {roof['gflops']:.0f} "
            "GFLOP/s."
            + ("" if r["step0_ok"] else " **Step-0 losses disagree: see results.json.**"),
            "",
            "| contender | steps/s | samples/s | spread | epoch s (with data) "
            "| step-0 loss | zoo ÷ this | this ÷ roofline |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        zoo = r["contenders"].get("zoo", {}).get("steps_per_s")
        for c in r["contenders"].values():
            mark = " †" if c["disrupted"] else ""
            lines.append(
                f"| {c['label']}{mark} | {_f(c['steps_per_s'], 1)} | {_f(c['samples_per_s'])} "
                f"| {c['spread']:.2f} | {_f(c['epoch_s'], 2)} | {c['loss_step0']:.6f} "
                f"| {_f(zoo and zoo / c['steps_per_s'], 2)} | {c['vs_roofline']:.3f} |"
            )
        lines.append(
            f"| roofline | {_f(roof['steps_per_s'], 1)} | {_f(roof['samples_per_s'])} | | | "
            f"| {_f(zoo and zoo / roof['steps_per_s'], 2)} | 1.000 |"
        )
        for key, why in r["skipped"].items():
            lines.append(f"| {key} (skipped: {why}) | | | | | | | |")
        for c in r["contenders"].values():
            if c["shortened"]:
                lines += [
                    "",
                    f"† {c['label']}: so slow that its blocks were cut to {c['block_steps']} "
                    f"steps (one would have taken over {results['plan']['max_block_s']:g} s) "
                    f"and its epoch to {c['epoch_batches_run']} batches.",
                ]
            elif c["disrupted"]:
                lines += [
                    "",
                    f"† {c['label']}: its slowest block took {c['spread']:.1f}x its fastest "
                    "(other processes, or a pause such as a full garbage collection); a "
                    "target against it counts only if it holds for both.",
                ]
        keys = list(r["ratios"])
        lines += [
            "",
            "Ratios of steady-state steps/s, row ÷ column:",
            "",
            "| | " + " | ".join(SHORT.get(k) or k for k in keys) + " |",
            "| --- |" + " ---: |" * len(keys),
        ]
        for a in keys:
            cells = " | ".join(f"{r['ratios'][a][b]:.2f}" for b in keys)
            lines.append(f"| {SHORT.get(a) or a} | {cells} |")
        if "dense_diagnostic" in r and zoo:
            d = r["dense_diagnostic"]
            lines += [
                "",
                f"The model's matmuls alone (forward, weight and input gradients, batch "
                f"{s['batch_size']}, {d['gflop']:.3g} GFLOP): XLA {d['xla_ms']:.2f} ms "
                f"({d['xla_gflops']:.1f} GFLOP/s, {1e3 / d['xla_ms']:.1f} steps/s if a step were "
                f"nothing else); zoo's whole step takes {1e3 / zoo:.2f} ms, "
                f"{zoo * d['xla_ms'] / 1e3:.2f}x of that bound.",
            ]
        if "conv_diagnostic" in r and zoo:
            d = r["conv_diagnostic"]
            torch_part = (
                f", torch {d['torch_ms']:.2f} ms ({d['torch_gflops']:.1f} GFLOP/s)"
                if "torch_ms" in d
                else ""
            )
            lines += [
                "",
                f"Convolutions alone (forward, weight and input gradients of the conv layers, "
                f"none for the first layer's input; batch {s['batch_size']}, "
                f"{d['gflop']:.3g} GFLOP): XLA {d['xla_ms']:.2f} ms "
                f"({d['xla_gflops']:.1f} GFLOP/s), the same inside a one-step `lax.scan` "
                f"{d['xla_scan_ms']:.2f} ms (jax-ml/jax#12868)"
                + (
                    f"; zoo's `conv_gemm` {d['gemm_ms']:.2f} ms, in a scan "
                    f"{d['gemm_scan_ms']:.2f} ms"
                    if "gemm_ms" in d
                    else ""
                )
                + f"{torch_part}; zoo's whole step (K={s['steps_per_dispatch']}) takes "
                f"{1e3 / zoo:.2f} ms, {1e3 / zoo / _own_conv_ms(d):.2f}x its fastest convs.",
            ]
        if "kernels_alone" in r and zoo:
            k_ms = r["kernels_alone"]["ms"]
            lines += [
                "",
                f"Timed in the same rounds as the contenders ({r['kernels_alone']['calls']} "
                f"calls a round; what the bound target uses): those kernels alone "
                f"{k_ms:.2f} ms, zoo's step {1e3 / zoo:.2f} ms = {1e3 / zoo / k_ms:.2f}x them.",
            ]
        lines.append("")

    lines += dispatch_table(results)
    p = results["pipeline"]
    if p:
        lines += [
            "## Data pipeline (Fashion-MNIST, batch 100, shuffled, /255)",
            "",
            "| loop | images/s |",
            "| --- | ---: |",
            f"| zoo.data.batches (Grain) | {_f(p['images_per_s'])} |",
            f"| NumPy permutation-and-gather loop | {_f(p['numpy_images_per_s'])} |",
            "",
            f"zoo.data.batches ÷ NumPy loop: {p['ratio']:.2f}.",
            "",
        ]
    lines += [
        "## Start-up (fresh processes)",
        "",
        "| import | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| `import {mod}` | {_f(t, 2)} |" for mod, t in results["imports"].items()]
    lines += [
        "",
        "Time to the first step, after imports (model built, step compiled and run once; zoo's "
        "first dispatch runs K steps), with an empty and then a warm persistent compilation "
        "cache:",
        "",
        "| workload/contender | cold s | warm s | process s (cold / warm) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for pair, runs in results["first_step"].items():
        cold = runs.get("cold") or runs.get("eager") or {}
        warm = runs.get("warm", {})
        lines.append(
            f"| {pair} | {_f(cold.get('first_step_s'), 2)} | {_f(warm.get('first_step_s'), 2)} "
            f"| {_f(cold.get('process_s'), 2)} / {_f(warm.get('process_s'), 2)} |"
        )
    if results.get("construction"):
        lines += [
            "",
            "Building a model: `zoo.create_model(name)` until its arrays are ready, in a fresh "
            "process after imports (`benchmarks/construction.py`; one process per cell), with "
            "no persistent compilation cache, an empty one and a warm one "
            "(`zoo.train.enable_compilation_cache`, as the recipes run):",
            "",
            *construction.markdown(results["construction"]),
        ]
    engine_out = results.get("engine", {})
    d = engine_out.get("dispatch", {})
    if "scan_us" in d:
        lines += [
            "",
            "From `benchmarks/engine.py`, the per-step dispatch cost of a tiny MLP: "
            f"eqx.filter_jit {_f(d.get('filter_jit_us'))} us, TrainStep() "
            f"{_f(d.get('trainstep_call_us'))} us, fit loop {_f(d.get('fit_loop_us'))} us, "
            f"inside one scan {_f(d.get('scan_us'), 1)} us.",
        ]
    first = engine_out.get("first_step", {})
    if first and "error" not in first:
        lines += [
            "",
            "From `benchmarks/engine.py`, the first MLP dispatch in a fresh process: "
            + ", ".join(
                f"{name} {r.get('first_step_s', float('nan')):.2f} s" for name, r in first.items()
            )
            + ".",
        ]
    for name, part in engine_out.items():
        if "error" in part:
            lines += ["", f"`benchmarks/engine.py` {name} failed: {part['error']}"]
    lines += ["", "## Targets", "", "| target | measured | met |", "| --- | ---: | --- |"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']} | {_f(t['value'], 2, 'x')}{note} | {met} |")
    lines.append("")
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, fsynced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under 2 minutes")
    parser.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default=None,
        help="how long to measure: full (default), quick (= --quick), gpu (benchmarks/gpu.sh), "
        "tiny (the smallest end-to-end run, for tests)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(contenders.KEYS),
        help="comma-separated subset of " + ",".join(contenders.KEYS),
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder")
    parser.add_argument(
        "--workloads", default="mlp,cnn,gru", help="comma-separated subset of mlp,cnn,gru"
    )
    parser.add_argument("--first-step", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_step:
        workload, key, cache = args.first_step
        print(json.dumps(first_step(workload, key, None if cache == "none" else cache)))
        return None

    plan_name = args.plan or ("quick" if args.quick else "full")
    plan = PLANS[plan_name]
    quick = plan_name != "full"
    keys = tuple(k for k in args.contenders.split(",") if k)
    unknown = [k for k in keys if k not in contenders.KEYS]
    if unknown:
        parser.error(f"--contenders: unknown {unknown}; choose from {list(contenders.KEYS)}")
    t0 = time.perf_counter()
    results: dict = {
        "quick": quick,
        "plan_name": plan_name,
        "machine": machine(),
        "plan": dataclasses.asdict(plan),
    }
    print(f"{results['machine']['cpu']}, {results['machine']['cores']} cores")
    rates = [roofline.matmul_rates(quick)]
    results["pipeline"] = pipeline.run(quick) if plan.pipeline else None
    results["workloads"] = {
        name: bench_workload(name, plan, keys) for name in args.workloads.split(",") if name
    }
    rates.append(roofline.matmul_rates(quick))  # before and after: the machine is shared
    results["matmul"] = rates
    for r in results["workloads"].values():
        add_roofline(r, roofline.best_rate(*rates))
    # `import zoo` includes JAX's import; the full run also times JAX's alone.
    modules = plan.imports or (
        ("zoo", "flax.nnx", "torch") if quick else ("jax", "zoo", "flax.nnx", "torch")
    )
    results["imports"] = import_times(plan.import_repeats, modules)
    results["first_step"] = first_step_times(
        tuple((w, k) for w, k in plan.first_step if w in results["workloads"] and k in keys)
    )
    names = plan.construction if plan.construction is not None else zoo.list_models()
    results["construction"] = construction.measure(names, repeats=1)
    results["engine"] = engine_extras(quick)
    results["targets"] = targets(results)
    results["machine"]["loadavg_end"] = _loadavg()
    results["wall_s"] = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    _write_atomic(out / "results.md", text)
    print("\n" + text)
    print(f"wrote {out / 'results.md'} and {out / 'results.json'} in {results['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
