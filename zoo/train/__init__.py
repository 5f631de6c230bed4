"""zoo's training engine: train state, compiled steps, `fit`, evaluation and checkpoints."""

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
from ._state import TrainState as TrainState, init_train_state as init_train_state
from ._step import TrainStep as TrainStep
