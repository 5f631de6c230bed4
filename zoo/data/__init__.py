"""Datasets and input pipelines: MNIST-style images, your own arrays and `.npz` files,
synthetic processes, Grain batches."""

from ._arrays import (
    InvalidDatasetError as InvalidDatasetError,
    check_arrays as check_arrays,
    load_npz as load_npz,
)
from ._augment import random_flip as random_flip, random_translate as random_translate
from ._idx import CorruptDatasetError as CorruptDatasetError
from ._normalize import normalize as normalize
from ._pipeline import (
    DEFAULT_READ_OPTIONS as DEFAULT_READ_OPTIONS,
    batches as batches,
    steps_per_epoch as steps_per_epoch,
)
from ._sources import (
    DatasetNotFoundError as DatasetNotFoundError,
    data_root as data_root,
    load as load,
)
from ._synthetic import (
    linear_regression as linear_regression,
    ou_process as ou_process,
)
