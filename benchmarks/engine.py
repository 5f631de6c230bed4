"""Speed of the training engine: dispatch cost, steps fused per call, roofline, compile cache.

Run `python -m benchmarks.engine` (add `--quick` for a short smoke run). It measures, in one
process on whatever JAX sees (a 2-core CPU here):

- the per-step cost of dispatching one compiled step, for a tiny model where the dispatch is
  all there is: a hand-written `eqx.filter_jit` step, `zoo.train.TrainStep.__call__` and the
  loop of `fit` (leaves partitioned once, buffers donated), against the same steps fused into
  one `lax.scan`;
- the OU task of the `ou_gru` recipe (`zoo.GRU` 1 -> 12 -> 1, batch 64, 10 time steps, data
  generated in JAX): one step per call against `K` steps per call (target: >= 5x);
- the 784-512-512-10 MLP at batch 100 on synthetic data: steps/s with one step per call and
  with `K` per call, against the roofline (model FLOPs per step, about 6 x params x batch,
  divided by the matmul rate of a big `jnp.dot` measured in the same run; target >= 0.85);
- the time to the first MLP step in a fresh process with no compilation cache, a cold one
  and a warm one (`zoo.train.enable_compilation_cache`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import zoo
import zoo.data
import zoo.train as zt

MLP_BATCH = 100
OU_BATCH, OU_STEPS = 64, 10


def _block(tree) -> None:
    jax.block_until_ready(tree)


def _race(fns: dict, rounds: int) -> dict[str, float]:
    """The fastest time of each of `fns` over `rounds` rounds, taking turns within each round,
    so that load from other processes on a shared machine hits all of them alike."""
    for fn in fns.values():
        fn()  # compile and warm up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


# --- dispatch cost ------------------------------------------------------------------------


def _filter_jit_step(loss_fn, optimizer):
    """What a user writes by hand: one `eqx.filter_jit` call per optimiser step."""

    @eqx.filter_jit
    def step(model, opt_state, batch, key):
        def loss(m):
            return loss_fn(m, None, batch, key)[0]

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, opt_state = optimizer.update(
            grads, opt_state, eqx.filter(model, eqx.is_inexact_array)
        )
        return eqx.apply_updates(model, updates), opt_state, value

    return step


def dispatch_cost(quick: bool) -> dict:
    """Microseconds per step of a tiny model (MLP 4-16-2, batch 8), where dispatch dominates."""
    n = 300 if quick else 2000
    model = eqx.nn.MLP(4, 2, 16, 1, key=jr.PRNGKey(0))
    optimizer = optax.adam(1e-3)
    loss_fn = zt.classification_loss(input_key="x", label_key="y")
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 4)).astype(np.float32), "y": np.zeros(8, np.int32)}
    device_batch = jax.device_put(batch)

    naive = _filter_jit_step(loss_fn, optimizer)

    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    key = jr.PRNGKey(1)
    state = (model, opt_state)

    def run_naive():
        nonlocal state
        m, o = state
        for _ in range(n):
            m, o, v = naive(m, o, device_batch, key)
        _block(v)
        state = (m, o)

    step = zt.TrainStep(loss_fn, optimizer)
    train_state = zt.init_train_state(model, optimizer, key=key)

    def run_public():
        nonlocal train_state
        ts = train_state
        for _ in range(n):
            ts, metrics = step(ts, device_batch)
        _block(metrics)
        train_state = ts

    runner = zt.Runner(step, train_state)

    def run_fit_path():
        for _ in range(n):
            metrics = runner.single(batch)  # host batch, as `fit` gets it from the iterator
        _block(metrics)

    stacked = jax.device_put({k: np.stack([v] * n) for k, v in batch.items()})

    def run_scan():
        _block(runner.scan(stacked))

    t = _race(
        {"naive": run_naive, "public": run_public, "fit": run_fit_path, "scan": run_scan},
        3 if quick else 7,
    )
    out = {
        "steps": n,
        "filter_jit_us": t["naive"] / n * 1e6,
        "trainstep_call_us": t["public"] / n * 1e6,
        "fit_loop_us": t["fit"] / n * 1e6,
        "scan_us": t["scan"] / n * 1e6,
    }
    print(
        f"dispatch, tiny MLP: eqx.filter_jit {out['filter_jit_us']:.0f} us/step, "
        f"TrainStep() {out['trainstep_call_us']:.0f} us/step, fit loop "
        f"{out['fit_loop_us']:.0f} us/step, {n} steps in one scan {out['scan_us']:.1f} us/step"
    )
    return out


# --- OU / GRU -----------------------------------------------------------------------------


def _ou_batch(key):
    clean, noisy = zoo.data.ou_process(key, OU_BATCH, OU_STEPS)
    return {"x": noisy[:, :-1, None], "y": clean[:, 1:, None]}


def ou_gru(quick: bool) -> dict:
    """The OU denoising task: one step per call against K steps per call.

    Two one-step-per-call baselines: the loop a user writes by hand (a jitted OU sampler,
    then an `eqx.filter_jit` step: two dispatches per step), and the engine's own one-step
    dispatch (data made inside the step, leaves partitioned once, buffers donated).
    """
    ks = (10, 100, 1000)
    n_single = 200 if quick else 1000
    model = zoo.GRU(key=jr.PRNGKey(0))
    optimizer = optax.adam(1e-4)
    loss_fn = zt.regression_loss(input_key="x", target_key="y")
    step = zt.TrainStep(loss_fn, optimizer, make_batch=_ou_batch)
    train_state = zt.init_train_state(model, optimizer, key=jr.PRNGKey(1))
    sample = jax.jit(_ou_batch)

    naive = _filter_jit_step(loss_fn, optimizer)

    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    keys = list(jr.split(jr.PRNGKey(2), n_single))

    def run_naive():
        m, o = model, opt_state
        for key in keys:
            data_key, loss_key = jr.split(key)
            m, o, v = naive(m, o, sample(data_key), loss_key)
        _block(v)

    runner = zt.Runner(step, train_state)

    def run_single():
        for _ in range(n_single):
            metrics = runner.generated(1)
        _block(metrics)

    def fused(k):
        def run():
            for _ in range(max(1, 1000 // k)):
                metrics = runner.generated(k)
            _block(metrics)

        return run

    fns = {"naive": run_naive, "single": run_single}
    fns.update({f"k{k}": fused(k) for k in ks})
    t = _race(fns, 2 if quick else 5)
    naive_ms = t["naive"] / n_single * 1e3
    single_ms = t["single"] / n_single * 1e3
    fused_ms = {k: t[f"k{k}"] / (max(1, 1000 // k) * k) * 1e3 for k in ks}
    best_ms = fused_ms[1000]
    out = {
        "model": "zoo.GRU (1 -> 12 -> 1), batch 64, 10 time steps, adam",
        "hand_loop_ms_per_step": naive_ms,
        "single_ms_per_step": single_ms,
        "fused_ms_per_step": {str(k): v for k, v in fused_ms.items()},
        "speedup_vs_hand_loop": naive_ms / best_ms,
        "speedup_vs_single": single_ms / best_ms,
        "seconds_per_1000_steps": best_ms,
        "target_speedup": 5.0,
    }
    print(
        f"OU/GRU: hand-written loop (jit sampler + eqx.filter_jit step) {naive_ms:.3f} ms/step, "
        f"engine one step per call {single_ms:.3f} ms/step, "
        + ", ".join(f"K={k} {v:.3f}" for k, v in fused_ms.items())
        + f" ms/step: {out['speedup_vs_hand_loop']:.1f}x vs the hand loop, "
        f"{out['speedup_vs_single']:.1f}x vs one per call (target 5x)"
    )
    return out


# --- MLP and roofline ---------------------------------------------------------------------


def _matmul(quick: bool):
    """A big square float32 `jnp.dot` and its FLOPs."""
    n = 1024 if quick else 2048
    a = jr.normal(jr.PRNGKey(0), (n, n), jnp.float32)
    b = jr.normal(jr.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return (lambda: _block(dot(a, b))), 2 * n**3


def mlp(quick: bool) -> dict:
    """784-512-512-10 MLP, batch 100, synthetic data: per call against fused, and roofline."""
    k = 100
    # 600 batches of 100 are one Fashion-MNIST epoch; shorter runs taken in turns many times
    # give steadier minima on a machine shared with other work.
    steps = 200 if quick else 300
    model = zoo.MLP(key=jr.PRNGKey(0))
    params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    flops_per_step = 6 * params * MLP_BATCH
    optimizer = optax.adam(1e-3)
    step = zt.TrainStep(
        zt.classification_loss(input_key="image", label_key="label", prepare=_flatten), optimizer
    )
    train_state = zt.init_train_state(model, optimizer, key=jr.PRNGKey(1))
    rng = np.random.default_rng(0)
    images = rng.random((steps * MLP_BATCH, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, steps * MLP_BATCH).astype(np.int32)
    host_batches = [
        {
            "image": images[i * MLP_BATCH : (i + 1) * MLP_BATCH],
            "label": labels[i * MLP_BATCH : (i + 1) * MLP_BATCH],
        }
        for i in range(steps)
    ]
    runner = zt.Runner(step, train_state)

    def run_single():
        for b in host_batches:
            metrics = runner.single(b)
        _block(metrics)

    def run_fused():
        # As `fit` does it: stack K host batches, put them on the device, one call.
        for i in range(0, steps, k):
            group = host_batches[i : i + k]
            metrics = runner.scan({n: np.stack([b[n] for b in group]) for n in group[0]})
        _block(metrics)

    # The same epoch through `fit` itself, from `zoo.data.batches` (uint8 images scaled per
    # batch), progress bar and metrics included: what a recipe gets.
    data = zoo.data.batches(
        {"image": (images * 255).astype(np.uint8), "label": labels},
        MLP_BATCH,
        seed=0,
        num_epochs=None,
    )

    def run_fit():
        zt.fit(
            train_state,
            step,
            data,
            num_epochs=1,
            steps_per_epoch=steps,
            steps_per_dispatch=k,
            progress=False,
            log_every=None,
        )

    run_dot, dot_flops = _matmul(quick)

    def run_dots():
        for _ in range(5):
            run_dot()

    t = _race(
        {"single": run_single, "fused": run_fused, "fit": run_fit, "dot": run_dots},
        2 if quick else 8,
    )
    single_s, fused_s = t["single"], t["fused"]
    fit_steps_s = steps / t["fit"]
    rate = 5 * dot_flops / t["dot"] / 1e9
    roofline = rate * 1e9 / flops_per_step
    out = {
        "params": params,
        "gflop_per_step": flops_per_step / 1e9,
        "matmul_gflops": rate,
        "roofline_steps_per_s": roofline,
        "single_steps_per_s": steps / single_s,
        "fused_steps_per_s": steps / fused_s,
        "fit_steps_per_s": fit_steps_s,
        "fused_vs_roofline": steps / fused_s / roofline,
        "fit_vs_roofline": fit_steps_s / roofline,
        "steps_per_dispatch": k,
        "target_vs_roofline": 0.85,
    }
    print(
        f"MLP 784-512-512-10, batch 100 ({out['gflop_per_step']:.3f} GFLOP/step): one step "
        f"per call {out['single_steps_per_s']:.0f} steps/s, {k} per call "
        f"{out['fused_steps_per_s']:.0f} steps/s, fit {fit_steps_s:.0f} steps/s; matmul "
        f"{rate:.0f} GFLOP/s -> roofline {roofline:.0f} steps/s; fused "
        f"{out['fused_vs_roofline']:.2f}x, fit {out['fit_vs_roofline']:.2f}x of it "
        "(target 0.85)"
    )
    return out


def _flatten(x):
    return x.reshape(x.shape[0], -1)


# --- time to first step -------------------------------------------------------------------


def _first_step(cache: str | None) -> dict:
    """In a fresh process: the time to the first completed MLP dispatch (K=100)."""
    t0 = time.perf_counter()
    if cache is not None:
        zt.enable_compilation_cache(cache)
    model = zoo.MLP(key=jr.PRNGKey(0))
    optimizer = optax.adam(1e-3)
    step = zt.TrainStep(
        zt.classification_loss(input_key="image", label_key="label", prepare=_flatten), optimizer
    )
    train_state = zt.init_train_state(model, optimizer, key=jr.PRNGKey(1))
    rng = np.random.default_rng(0)
    batches = {
        "image": rng.random((100, MLP_BATCH, 28, 28), dtype=np.float32),
        "label": rng.integers(0, 10, (100, MLP_BATCH)).astype(np.int32),
    }
    runner = zt.Runner(step, train_state)
    _block(runner.scan(batches))
    return {"first_step_s": time.perf_counter() - t0}


def first_step_times() -> dict:
    """Time to the first step in fresh processes: no cache, a cold cache, a warm cache."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cache in (("no_cache", None), ("cold", tmp), ("warm", tmp)):
            t = time.perf_counter()
            args = [sys.executable, "-m", "benchmarks.engine", "--first-step"]
            args += [cache] if cache else ["none"]
            result = subprocess.run(args, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            out[name] = {**json.loads(result.stdout.strip().splitlines()[-1]), "process_s": wall}
    print(
        "time to first MLP step (compile + one 100-step call): "
        + ", ".join(
            f"{k} {v['first_step_s']:.2f} s (process {v['process_s']:.2f} s)"
            for k, v in out.items()
        )
    )
    return out


def run(quick: bool) -> dict:
    """All engine benchmarks; returns their numbers (also printed)."""
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores visible")
    return {
        "device": jax.devices()[0].device_kind,
        "dispatch": dispatch_cost(quick),
        "ou_gru": ou_gru(quick),
        "mlp": mlp(quick),
        "first_step": first_step_times(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zoo.train engine speed")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--first-step", metavar="CACHE", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.first_step is not None:
        cache = None if args.first_step == "none" else args.first_step
        print(json.dumps(_first_step(cache)))
    else:
        results = run(args.quick)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
