"""zoo's model architectures: `eqx.Module`s that take one example per call, and the registry
of named architectures with their pretrained weight sets.

One architecture, one file: each module holds its model, the `@register_model` builders that
name it and its table of `WeightSet`s (see `zoo/models/_registry.py` for how a new file
registers itself). Importing `zoo.models` registers them all.
"""

from ._registry import (
    ModelSpec as ModelSpec,
    UnknownModelError as UnknownModelError,
    UnsafeNameError as UnsafeNameError,
    WeightSet as WeightSet,
    check_tag as check_tag,
    get_model_spec as get_model_spec,
    register_model as register_model,
    registered_architectures as registered_architectures,
    split_model_name as split_model_name,
)

# isort: split
from ._conv_gemm import conv_gemm as conv_gemm, prefer_gemm as prefer_gemm
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
from ._resnet import ResNet as ResNet
from ._vit import VisionTransformer as VisionTransformer
