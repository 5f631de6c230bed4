"""Speed of a fine-tuning step: the ConvNet with its backbone frozen against the full step.

Run `python -m benchmarks.finetune` (add `--quick` for a short smoke run). In one process,
on `zoo.ConvNet()` (the recipes' default) at batch 100 on synthetic 28x28 images, it times
blocks of K optimiser steps, one per compiled call (`zoo.train.Runner.single`, as the CNN
recipe runs: convolutions inside `lax.scan` are several times slower on XLA:CPU,
jax-ml/jax#12868), for:

- `full`: every parameter trains;
- `probe`: only the head trains (`zoo.train.trainable_filter(model, include="head.*")`),
  so no weight gradients are taken for the convolutions and Adam holds nothing for them;
- `probe_frozen_stats`: the same with `freeze_norm_stats=True`, the backbone's BatchNorm in
  inference mode (running statistics, not batch statistics).

The contenders take turns within each round so that load from other processes hits them
alike; the best time of each is reported, per step.
"""

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

import zoo
import zoo.train as zt

BATCH = 100


def _runner(mode: str) -> zt.Runner:
    model, model_state = eqx.nn.make_with_state(zoo.ConvNet)(key=jr.PRNGKey(0))
    optimizer = optax.adam(1e-3)
    trainable = None if mode == "full" else zt.trainable_filter(model, include="head.*")
    train_state = zt.init_train_state(
        model, optimizer, key=jr.PRNGKey(1), model_state=model_state, trainable=trainable
    )
    step = zt.TrainStep(
        zt.classification_loss(), optimizer, freeze_norm_stats=mode == "probe_frozen_stats"
    )
    return zt.Runner(step, train_state)


def frozen_backbone(quick: bool) -> dict:
    """Best time per step of each mode, and the probe's speed-up over the full step."""
    k, rounds = (5, 3) if quick else (20, 10)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.random((BATCH, 1, 28, 28), dtype=np.float32),
        "label": rng.integers(0, 10, BATCH).astype(np.int32),
    }
    runners = {m: _runner(m) for m in ("full", "probe", "probe_frozen_stats")}
    for runner in runners.values():
        jax.block_until_ready(runner.single(batch))  # compile and warm up
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(rounds):
        for name, runner in runners.items():
            t, metrics = time.perf_counter(), None
            for _ in range(k):
                metrics = runner.single(batch)
            jax.block_until_ready(metrics)
            best[name] = min(best[name], time.perf_counter() - t)
    out: dict = {name: {"step_ms": 1e3 * t / k} for name, t in best.items()}
    for name in ("probe", "probe_frozen_stats"):
        out[name]["speedup_vs_full"] = best["full"] / best[name]
    print(
        f"ConvNet step at batch {BATCH}, K={k}: "
        + ", ".join(f"{n} {v['step_ms']:.2f} ms" for n, v in out.items())
        + f"; probe {out['probe']['speedup_vs_full']:.2f}x faster than full"
    )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="frozen-backbone step vs full step")
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores visible")
    results = frozen_backbone(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
