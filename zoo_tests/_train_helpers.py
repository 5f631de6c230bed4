"""Tiny models and data sets for the training-engine tests, and a script for the subprocess
tests (`python zoo_tests/_train_helpers.py sigint|sigkill WORKDIR`)."""

import sys
import time

import equinox as eqx
import grain
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

N, FEATURES, BATCH = 64, 4, 8
STEPS_PER_EPOCH = N // BATCH  # 8


class BNNet(eqx.Module):
    """A stateful model: Linear -> BatchNorm (batch statistics) -> ReLU -> Linear."""

    lin1: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    lin2: eqx.nn.Linear

    def __init__(self, width: int = 16, *, key):
        k1, k2 = jr.split(key)
        self.lin1 = eqx.nn.Linear(FEATURES, width, key=k1)
        self.norm = eqx.nn.BatchNorm(width, axis_name="batch", mode="batch")
        self.lin2 = eqx.nn.Linear(width, 2, key=k2)

    def __call__(self, x, state, *, key=None):
        h, state = self.norm(self.lin1(x), state)
        return self.lin2(jax.nn.relu(h)), state


def make_model(kind: str, key, width: int = 16):
    """`(model, model_state)` for `kind` in `"stateless"`, `"stateful"`."""
    if kind == "stateless":
        return eqx.nn.MLP(FEATURES, 2, width, 1, key=key), eqx.nn.State(None)
    return eqx.nn.make_with_state(BNNet)(width, key=key)


def arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x, y


def dataset(seed: int = 0, *, delay: float = 0.0, nan_at: int | None = None, on_index=None):
    """An endless Grain dataset of batches, reshuffled each epoch from `(seed, epoch)`."""
    x, y = arrays()

    def get(i):
        epoch, j = divmod(int(i), STEPS_PER_EPOCH)
        idx = np.random.default_rng((seed, epoch)).permutation(N)[j * BATCH : (j + 1) * BATCH]
        batch = {"x": x[idx], "y": y[idx]}
        if nan_at is not None and i == nan_at:
            batch["x"] = np.full_like(batch["x"], np.nan)
        if on_index is not None:
            on_index(int(i))
        if delay:
            time.sleep(delay)
        return batch

    options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    return grain.MapDataset.range(10**9).map(get).to_iter_dataset(options)


_STEPS = {}


def setup(kind: str = "stateless", *, lr: float = 1e-2, seed: int = 0):
    """`(train_state, step)` for a small classification problem: a fresh train state, and a
    step shared between tests so that its compiled functions are reused (the tests are
    compile-bound on CPU)."""
    import zoo.train as zt

    if (kind, lr) not in _STEPS:
        loss = zt.classification_loss(input_key="x", label_key="y")
        _STEPS[kind, lr] = zt.TrainStep(loss, optax.adam(lr))
    step = _STEPS[kind, lr]
    model, state = make_model(kind, jr.PRNGKey(seed))
    train_state = zt.init_train_state(
        model, step.optimizer, key=jr.PRNGKey(seed + 1), model_state=state
    )
    return train_state, step


def arrays_of(tree):
    return [
        np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a)
        for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array))
    ]


SIGINT_EPOCHS, SIGINT_SPE, SIGINT_K, SIGINT_LOG_EVERY = 3, 10, 3, 4


def _sigint(workdir: str) -> None:
    import zoo.train as zt

    train_state, step = setup()

    def on_index(i):
        if i == 4:
            print("READY", flush=True)

    try:
        zt.fit(
            train_state,
            step,
            dataset(delay=0.05, on_index=on_index),
            num_epochs=SIGINT_EPOCHS,
            steps_per_epoch=SIGINT_SPE,
            steps_per_dispatch=SIGINT_K,
            workdir=workdir,
            log_every=SIGINT_LOG_EVERY,
            progress=False,
        )
    except zt.TrainingInterrupted as e:  # what a command-line entry does
        print(e, file=sys.stderr)
        sys.exit(130)
    print("FINISHED", flush=True)


def _sigkill(workdir: str) -> None:
    import zoo.train as zt
    import zoo.train._checkpoint as checkpoint

    train_state, step = setup()
    train_state, _ = step(train_state, next(iter(dataset())))
    zt.save_checkpoint(workdir, train_state, data_state={"batches": 1})

    def stall(src, dst):
        print("WRITING", flush=True)
        time.sleep(120)

    checkpoint._replace = stall
    train_state, _ = step(train_state, next(iter(dataset())))
    zt.save_checkpoint(workdir, train_state, data_state={"batches": 2})


if __name__ == "__main__":
    {"sigint": _sigint, "sigkill": _sigkill}[sys.argv[1]](sys.argv[2])
