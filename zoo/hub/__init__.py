"""The model hub: registered architectures, pretrained weights with model cards, and the
checks that make loading them safe.

Use a model:

    model, state = zoo.create_model("mlp_mnist", pretrained=True)    # default weights
    model, state = zoo.create_model("cnn_mnist.fashion", pretrained=True)
    model, state = zoo.create_model("cnn_mnist", pretrained=True, num_classes=5, key=key)
    zoo.list_models("*mnist*", pretrained=True); zoo.model_card("mlp_mnist")

Pretrained models come back in inference mode; `eqx.nn.inference_mode(model, False)`
switches them back to training. `key=None` means `jax.random.PRNGKey(0)`.

**Names** are `arch` or `arch.tag` of lowercase letters, digits, `_`, `-` and `.`. A source
is a folder when it is a `pathlib.Path` or a `str` naming an existing directory, a URL when
it has `://`, and otherwise a name.

**Where weights are found**, in order: the architecture's table of weight sets
([`zoo.hub.WeightSet`][]: bundled in `zoo/hub/weights/<name>/`, or a pinned URL), other
bundled folders, then `$ZOO_HOME/weights/<name>/` (`$ZOO_HOME` defaults to
`$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`). A URL of a published folder must pin the
SHA-256 of its `card.json` ([`zoo.hub.card_sha256`][]), `https://host/path/<name>/#sha256=<64
hex>`; the card lists the size and SHA-256 of every other file, so the pin covers them all.
It is downloaded once into `$ZOO_HOME/downloads/<sha256>/` (renamed into place only after
every file matched; each file capped at the size the card states, the card at 4 MiB, each
file within `$ZOO_DOWNLOAD_DEADLINE` seconds, default 600) and verified again on every load
from there; a cached folder that fails is removed, with a `DamagedCacheWarning`, and fetched
again. A query string in the URL is kept on every file's URL. `ZOO_OFFLINE=1` forbids
network downloads.

**A weights folder** holds `config.json` (`{"format": 1, "architecture": "mlp_mnist",
"config": {builder kwargs}}`), `weights.eqx` (`eqx.tree_serialise_leaves((model, state))`),
`card.json` (a [`zoo.ModelCard`][], listing the SHA-256 and size of every other file and
repeating the config) and optionally `golden.npz` (inputs `x` and the outputs `y` they gave).
Loading checks every listed file's size and SHA-256 and that the card's config is
`config.json`'s, rebuilds the skeleton with `eqx.filter_eval_shape`, compares every array's
shape and dtype with the skeleton's, and only then deserialises. Nothing is unpickled.

**Publish a model** (what a recipe does at the end of training; call
[`zoo.hub.check_publish_tag`][] before training, so that a tag zoo's own weights use is
refused before the run rather than shadowed after it):

    zoo.hub.check_publish_tag("mlp_mnist", "my-run")
    preprocess = zoo.hub.Preprocess(layout="flat", normalize="auto")  # "chw" for a ConvNet
    card = zoo.ModelCard(
        name="mlp_mnist.my-run",             # registered architecture . tag
        dataset="fashion-mnist",             # config: read from the model itself
        metrics={"test_accuracy": 0.8941},   # fractions; `zoo eval` compares test_accuracy
        command="zoo train mnist_mlp --epochs 10",
        recipe_config=dataclasses.asdict(config),
        preprocess=preprocess,
    )
    zoo.save_pretrained(
        zoo.hub.user_weights_dir() / card.name,  # or any folder
        model, state, card=card,                 # state: None is fine for stateless models
        golden_input=preprocess(test_images[:8]),  # stored with the outputs it gives
    )

**Your own model** in the hub: register a builder for it (its keyword arguments are the
model's constructor arguments, kept by the model as fields of the same name, so that
`save_pretrained` can read the config back), then save and load it like zoo's own:

```python
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import zoo


class TinyNet(eqx.Module):
    layer: eqx.nn.Linear
    in_size: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(self, in_size=4, num_classes=3, *, key):
        self.in_size, self.num_classes = in_size, num_classes
        self.layer = eqx.nn.Linear(in_size, num_classes, key=key)

    def __call__(self, x, *, key=None):
        return self.layer(x)


@zoo.register_model(head=lambda m: m.layer)
def tiny_net(*, key, **kwargs):
    "A one-layer classifier defined outside zoo."
    return eqx.nn.make_with_state(TinyNet)(**kwargs, key=key)


model, state = zoo.create_model("tiny_net", in_size=5, key=jr.PRNGKey(1))
folder = tempfile.mkdtemp() + "/tiny_net.demo"
card = zoo.save_pretrained(folder, model, state, card=zoo.ModelCard(name="tiny_net.demo"))
assert card.config == {"in_size": 5}           # read from the model, not retyped
loaded, _ = zoo.load_pretrained(folder)         # a str naming a folder is a folder
x = jnp.ones(5)
assert np.array_equal(loaded(x), model(x))
```

`save_pretrained` first checks that the config rebuilds the model, then writes each file
atomically (the card last) and returns the completed card. `Preprocess` computes what
`zoo.data.batches(normalize=..., mean=..., std=...)` does, bit for bit, then reshapes.
"""

# The registry lives below the models (zoo.models); the hub re-exports its public calls.
from ..models import (
    ModelSpec as ModelSpec,
    WeightSet as WeightSet,
    get_model_spec as get_model_spec,
    register_model as register_model,
    split_model_name as split_model_name,
)
from ._card import ModelCard as ModelCard, Preprocess as Preprocess
from ._config import constructor_config as constructor_config
from ._convert import (
    ConversionError as ConversionError,
    convert_state_dict as convert_state_dict,
    from_timm_vit as from_timm_vit,
    from_torchvision_resnet as from_torchvision_resnet,
    to_state_dict as to_state_dict,
)
from ._create import (
    create_model as create_model,
    list_models as list_models,
    load_pretrained as load_pretrained,
    model_card as model_card,
)
from ._errors import (
    ArchitectureMismatchError as ArchitectureMismatchError,
    ChecksumMismatchError as ChecksumMismatchError,
    DamagedCacheWarning as DamagedCacheWarning,
    DownloadError as DownloadError,
    DownloadLimitError as DownloadLimitError,
    GoldenMismatchError as GoldenMismatchError,
    HeadReinitialisedWarning as HeadReinitialisedWarning,
    OfflineError as OfflineError,
    PublishTagError as PublishTagError,
    TruncatedWeightsError as TruncatedWeightsError,
    UnknownModelError as UnknownModelError,
    UnsafeNameError as UnsafeNameError,
    WeightsError as WeightsError,
    WeightsNotFoundError as WeightsNotFoundError,
)
from ._integrity import card_sha256 as card_sha256
from ._pretrained import check_golden as check_golden, save_pretrained as save_pretrained
from ._safetensors import (
    export_safetensors as export_safetensors,
    load_safetensors as load_safetensors,
    save_safetensors as save_safetensors,
)
from ._sources import (
    bundled_weights_dir as bundled_weights_dir,
    check_publish_tag as check_publish_tag,
    user_weights_dir as user_weights_dir,
    zoo_home as zoo_home,
)
from ._torch_sources import (
    TorchSource as TorchSource,
    fetch_torch_weights as fetch_torch_weights,
    torch_sources as torch_sources,
)
