"""zoo's model architectures: `eqx.Module`s that take one example per call."""

from ._convnet import ConvNet as ConvNet
from ._gru import (
    GRU as GRU,
    GRUCell as GRUCell,
    GRUClassifier as GRUClassifier,
    GRUEncoder as GRUEncoder,
)
from ._mlp import MLP as MLP
from ._regression import (
    LinearRegression as LinearRegression,
    LogisticRegression as LogisticRegression,
    least_squares as least_squares,
)
