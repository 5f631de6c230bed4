"""zoo's training engine: train state, compiled steps, `fit` and its callbacks, metric
writers, evaluation, checkpoints and fine-tuning filters.

```python
import jax.random as jr, optax, zoo, zoo.data, zoo.train

model = zoo.MLP(key=jr.PRNGKey(0))
optimizer = optax.adam(1e-3)
train_state = zoo.train.init_train_state(model, optimizer, key=jr.PRNGKey(1))
flatten = lambda x: x.reshape(x.shape[0], -1)
step = zoo.train.TrainStep(zoo.train.classification_loss(prepare=flatten), optimizer)
data = zoo.data.batches({"image": x, "label": y}, 100, seed=0)  # endless, reshuffled
test_data = zoo.data.batches({"image": x_test, "label": y_test}, 1000, seed=0, num_epochs=1,
                             shuffle=False, drop_remainder=False)
test = zoo.train.Evaluator(zoo.train.classification_metrics(prepare=flatten), test_data)
train_state, history = zoo.train.fit(
    train_state, step, data, num_epochs=10, steps_per_epoch=len(x) // 100,
    steps_per_dispatch=50, eval_fn=test, workdir="runs/mlp", resume=True,
    trackers=["jsonl", "tensorboard"])
```

**Model state.** A stateful model (BatchNorm) differs only in building it with
`eqx.nn.make_with_state` and passing `model_state=` to `init_train_state`; the same losses
batch it over `axis_name="batch"`. A stateless model's state is an empty `eqx.nn.State`,
everywhere in `zoo.train` (`TrainState.model_state`, what losses and `eval_fn` receive).

**The loop.** `fit` dispatches compiled steps and calls a list of [`zoo.train.Callback`][]s
at fixed points (start, epoch start, after each dispatch, each record, epoch end, interrupt,
end). The built-ins are [`zoo.train.SignalStop`][], [`zoo.train.NonFiniteGuard`][],
[`zoo.train.MetricsLog`][], [`zoo.train.Checkpointer`][], [`zoo.train.Evaluate`][] and
[`zoo.train.ProgressBar`][]; `fit(..., callbacks=[...])` adds one or replaces the default of
its class. A callback is a small class:

```python
class PrintLR(zoo.train.Callback):
    def on_epoch_end(self, ctx):
        ctx.record["lr"] = float(schedule(ctx.step))  # logged with the epoch's record
```

**Trackers.** Records go to metric writers ([`zoo.train.MetricWriter`][]): the run's
`metrics.jsonl` ([`zoo.train.JsonlWriter`][], the default), TensorBoard
([`zoo.train.TensorBoardWriter`][]) and Weights & Biases ([`zoo.train.WandbWriter`][], also
offline with `WANDB_MODE=offline`); the last two need `pip install "equinox-zoo[track]"`.
`fit(..., trackers=["jsonl", "tensorboard", "wandb"])` builds them under the run folder.

**Fine-tuning.** `init_train_state(..., trainable=spec)` trains only some leaves: `spec`
is a bool pytree (e.g. [`zoo.train.trainable_filter`][]`(model, include="head.*")` for a
linear probe) or a callable on leaf paths. Frozen leaves get no gradients (the model is
partitioned before differentiating) and no optimiser state;
`TrainStep(..., freeze_norm_stats=True)` also keeps frozen BatchNorm layers' running
statistics fixed.

**Parallelism.** `fit` trains data parallel over every visible device (a `"data"` mesh from
`data_mesh`; pass `mesh=zoo.train.data_mesh(n)` for fewer). For several processes, call
`zoo.train.initialize_distributed()` first, then build the data and call `fit` as above on
every process. [`zoo.train.Runner`][] is the loop's fast path (state partitioned once, K
steps per `lax.scan`) for code that drives training itself.
"""

from ._callback import Callback as Callback, FitContext as FitContext
from ._callbacks import (
    Checkpointer as Checkpointer,
    Evaluate as Evaluate,
    MetricsLog as MetricsLog,
    NonFiniteGuard as NonFiniteGuard,
    ProgressBar as ProgressBar,
    SignalStop as SignalStop,
)
from ._checkpoint import (
    CheckpointCorruptError as CheckpointCorruptError,
    CheckpointMismatchError as CheckpointMismatchError,
    latest_checkpoint as latest_checkpoint,
    list_checkpoints as list_checkpoints,
    read_checkpoint_header as read_checkpoint_header,
    restore_checkpoint as restore_checkpoint,
    save_checkpoint as save_checkpoint,
    verify_checkpoint as verify_checkpoint,
)
from ._compile_cache import (
    enable_compilation_cache as enable_compilation_cache,
    zoo_cache_dir as zoo_cache_dir,
)
from ._errors import (
    NonFiniteLossError as NonFiniteLossError,
    StepCheckError as StepCheckError,
    TrainingInterrupted as TrainingInterrupted,
)
from ._evaluate import Evaluator as Evaluator, evaluate as evaluate, predict as predict
from ._fit import fit as fit
from ._lock import (
    RunFolderLockedError as RunFolderLockedError,
    lock_run_folder as lock_run_folder,
)
from ._loss import (
    LossFn as LossFn,
    MetricFn as MetricFn,
    batch_apply as batch_apply,
    binary_classification_loss as binary_classification_loss,
    binary_classification_metrics as binary_classification_metrics,
    classification_loss as classification_loss,
    classification_metrics as classification_metrics,
    regression_loss as regression_loss,
    regression_metrics as regression_metrics,
    stateless as stateless,
)
from ._metrics import read_metrics as read_metrics
from ._parallel import (
    batch_sharding as batch_sharding,
    data_mesh as data_mesh,
    global_batch as global_batch,
    initialize_distributed as initialize_distributed,
    replicate as replicate,
    replicated_sharding as replicated_sharding,
)
from ._runner import Runner as Runner, to_device as to_device
from ._state import (
    TrainState as TrainState,
    empty_state as empty_state,
    init_train_state as init_train_state,
)
from ._steering import is_steering as is_steering, steering_field as steering_field
from ._step import TrainStep as TrainStep
from ._trainable import trainable_filter as trainable_filter
from ._writers import (
    JsonlWriter as JsonlWriter,
    MetricWriter as MetricWriter,
    TensorBoardWriter as TensorBoardWriter,
    WandbWriter as WandbWriter,
    make_writers as make_writers,
)
