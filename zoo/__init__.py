"""zoo: an Equinox model zoo for JAX.

Set `ZOO_TYPECHECK=1` in the environment to check every array argument's shape and dtype at
runtime (jaxtyping + beartype); checks run at trace time, so they cost nothing inside `jit`.
"""

from . import _typecheck

_typecheck.install_if_requested()

# --- models (foundation) ---
from ._summary import summary as summary  # noqa: E402
from .models import (  # noqa: E402
    GRU as GRU,
    MLP as MLP,
    ConvNet as ConvNet,
    GRUCell as GRUCell,
    GRUClassifier as GRUClassifier,
    LinearRegression as LinearRegression,
    LogisticRegression as LogisticRegression,
    ResNet as ResNet,
    VisionTransformer as VisionTransformer,
    least_squares as least_squares,
)

# --- hub ---
# isort: split
from ._version import __version__ as __version__  # noqa: E402
from .hub import (  # noqa: E402
    ModelCard as ModelCard,
    create_model as create_model,
    list_models as list_models,
    load_pretrained as load_pretrained,
    model_card as model_card,
    register_model as register_model,
    save_pretrained as save_pretrained,
)
