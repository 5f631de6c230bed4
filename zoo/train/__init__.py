"""zoo's training engine: train state, compiled steps, `fit`, evaluation and checkpoints.

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
    steps_per_dispatch=50, eval_fn=test, workdir="runs/mlp", resume=True)
```

A stateful model (BatchNorm) differs only in building it with `eqx.nn.make_with_state` and
passing `model_state=` to `init_train_state`; the same losses batch it over `axis_name="batch"`.

`fit` trains data parallel over every visible device (a `"data"` mesh from `data_mesh`; pass
`mesh=zoo.train.data_mesh(n)` for fewer). For several processes, call
`zoo.train.initialize_distributed()` first, then build the data and call `fit` as above on
every process.
"""

from ._checkpoint import (
    CheckpointMismatchError as CheckpointMismatchError,
    latest_checkpoint as latest_checkpoint,
    list_checkpoints as list_checkpoints,
    read_checkpoint_header as read_checkpoint_header,
    restore_checkpoint as restore_checkpoint,
    save_checkpoint as save_checkpoint,
)
from ._compile_cache import (
    enable_compilation_cache as enable_compilation_cache,
    zoo_cache_dir as zoo_cache_dir,
)
from ._evaluate import Evaluator as Evaluator, evaluate as evaluate, predict as predict
from ._fit import (
    NonFiniteLossError as NonFiniteLossError,
    TrainingInterrupted as TrainingInterrupted,
    fit as fit,
    to_device as to_device,
)
from ._loss import (
    LossFn as LossFn,
    MetricFn as MetricFn,
    batch_apply as batch_apply,
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
from ._state import TrainState as TrainState, init_train_state as init_train_state
from ._step import TrainStep as TrainStep
