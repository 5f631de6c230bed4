import dataclasses
import functools
import hashlib
import http.server
import json
import threading
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import zoo
from zoo.hub import _sources
from zoo.models import _registry

# One example's input shape for each architecture zoo registers.
INPUTS = {
    "mlp_mnist": (784,),
    "cnn_mnist": (1, 28, 28),
    "cnn_mnist_strong": (1, 28, 28),
    "gru_ou": (10, 1),
    "gru_rows": (28, 28),
    "resnet18": (3, 224, 224),
    "resnet34": (3, 224, 224),
    "resnet50": (3, 224, 224),
    "resnet20": (3, 32, 32),
    "resnet32": (3, 32, 32),
    "vit_tiny_patch16_224": (3, 224, 224),
    "vit_small_patch16_224": (3, 224, 224),
    "vit_base_patch16_224": (3, 224, 224),
    "vit_patch4_28": (1, 28, 28),
}


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """An empty `$ZOO_HOME` and an empty bundled folder, so only this test's weights exist."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.setattr(_sources, "BUNDLED_DIR", tmp_path / "bundled")
    return tmp_path / "home"


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def _assert_bit_identical(a, b):
    xs, ys = _arrays(a), _arrays(b)
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _outputs(model, state, x):
    return zoo.hub._pretrained.apply_batch(eqx.nn.inference_mode(model), state, x)


def _publish(name, home, *, key=None, golden=False, **config):
    """Create, save under `$ZOO_HOME/weights/<name>` and return `(model, state, card)`."""
    arch = name.partition(".")[0]
    model, state = zoo.create_model(arch, key=key, **config)
    x = jnp.ones((2, *INPUTS[arch])) if golden else None
    card = zoo.save_pretrained(
        home / "weights" / name,
        model,
        state,
        card=zoo.ModelCard(name=name, config=config, dataset="fashion-mnist"),
        golden_input=x,
    )
    return model, state, card


# ---------------------------------------------------------------- registry and create_model


# Small configurations of the same architectures: initialising the full-size ones eagerly
# compiles one random-number kernel per shape, seconds each on a busy 2-core machine.
TINY = {
    "mlp_mnist": {"width": 8, "depth": 1},
    "cnn_mnist": {"channels": (4, 4, 4, 4)},
    "cnn_mnist_strong": {"channels": (4, 4, 4, 4), "hidden": (8,)},
    "gru_ou": {},
    "gru_rows": {"hidden_size": 4},
    **{
        name: {"layers": (1, 1, 1, 1), "widths": (4, 4, 4, 4), "stem_width": 4}
        for name in ("resnet18", "resnet34", "resnet50")
    },
    **{
        name: {"layers": (1, 1, 1), "widths": (4, 4, 4), "stem_width": 4}
        for name in ("resnet20", "resnet32")
    },
    **{
        name: {"dim": 8, "depth": 1, "num_heads": 2}
        for name in (
            "vit_tiny_patch16_224",
            "vit_small_patch16_224",
            "vit_base_patch16_224",
            "vit_patch4_28",
        )
    },
}
MLP, CNN = TINY["mlp_mnist"], TINY["cnn_mnist"]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_create_every_registered_model(name):
    assert sorted(INPUTS) == [n for n in zoo.list_models() if n in _registry._REGISTRY]
    # The full-size model, without computing anything.
    model, state = eqx.filter_eval_shape(zoo.create_model, name)
    x = jax.ShapeDtypeStruct((2, *INPUTS[name]), jnp.float32)
    y = eqx.filter_eval_shape(_outputs, model, state, x)
    expected = {"gru_ou": (2, 10, 1)}.get(name, (2, 10))
    if name.endswith("224") or name in ("resnet18", "resnet34", "resnet50"):
        expected = (2, 1000)  # ImageNet layouts
    assert y.shape == expected and y.dtype == jnp.float32
    # A small one, run.
    model, state = zoo.create_model(name, **TINY[name])
    assert isinstance(state, eqx.nn.State)
    y = _outputs(model, state, jnp.zeros((2, *INPUTS[name])))
    assert y.shape == expected and bool(jnp.all(jnp.isfinite(y)))


def test_stateless_models_get_an_empty_state():
    _, state = zoo.create_model("mlp_mnist", **MLP)
    assert isinstance(state, eqx.nn.State) and jax.tree.leaves(state) == []
    _, state = zoo.create_model("cnn_mnist", **CNN)
    assert len(jax.tree.leaves(state)) > 0


def test_default_key_is_fixed_and_key_is_used(getkey):
    a, _ = zoo.create_model("mlp_mnist", **MLP)
    b, _ = zoo.create_model("mlp_mnist", **MLP)
    c, _ = zoo.create_model("mlp_mnist", key=getkey(), **MLP)
    _assert_bit_identical(a, b)
    assert not np.array_equal(a.layers[0].weight, c.layers[0].weight)


def test_overrides_and_num_classes_reach_the_builder():
    model, _ = zoo.create_model("mlp_mnist", num_classes=3, **MLP)
    assert model.layers[-1].weight.shape == (3, 8)
    model, _ = zoo.create_model("cnn_mnist_strong", num_classes=4, **TINY["cnn_mnist_strong"])
    assert model.head.weight.shape == (4, 8)
    with pytest.raises(ValueError, match="no `num_classes`"):
        zoo.create_model("gru_ou", num_classes=3)


def test_registering_a_taken_name_raises():
    def builder(*, key, num_classes=None):
        return eqx.nn.make_with_state(zoo.MLP)(key=key)

    with pytest.raises(ValueError, match="'mlp_mnist' is already registered"):
        zoo.register_model(name="mlp_mnist")(builder)
    try:
        assert zoo.register_model(name="test_hub_tmp")(builder) is builder
        assert "test_hub_tmp" in zoo.list_models()
        with pytest.raises(ValueError, match="already registered"):
            zoo.register_model(builder, name="test_hub_tmp")  # pyright: ignore[reportCallIssue]
    finally:
        _registry._REGISTRY.pop("test_hub_tmp", None)
    with pytest.raises(zoo.hub.UnsafeNameError):
        zoo.register_model(name="has.dot")(builder)
    # Without parentheses the function's name is the model's name.
    try:
        zoo.register_model(builder)
        assert "builder" in zoo.list_models()
    finally:
        _registry._REGISTRY.pop("builder", None)


def test_list_models_patterns(hub_home):
    assert zoo.list_models() == sorted(zoo.list_models())
    assert zoo.list_models("cnn*") == ["cnn_mnist", "cnn_mnist_strong"]
    assert zoo.list_models("*_rows") == ["gru_rows"]
    assert zoo.list_models("nothing*") == []
    assert zoo.list_models(pretrained=True) == []
    _publish("mlp_mnist.b", hub_home, **MLP)
    _publish("mlp_mnist.a", hub_home, **MLP)
    _publish("gru_ou.a", hub_home)
    (hub_home / "weights" / "README.md").write_text("not weights")
    (hub_home / "weights" / "Not_A_Name").mkdir()
    assert zoo.list_models(pretrained=True) == ["gru_ou.a", "mlp_mnist.a", "mlp_mnist.b"]
    assert zoo.list_models("*.a", pretrained=True) == ["gru_ou.a", "mlp_mnist.a"]
    assert zoo.list_models("mlp*", pretrained=True) == ["mlp_mnist.a", "mlp_mnist.b"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: zoo.create_model("../x"),
        lambda: zoo.create_model("a/b"),
        lambda: zoo.create_model("Mlp"),
        lambda: zoo.create_model("mlp_mnist..x", pretrained=True),
        lambda: zoo.create_model("mlp_mnist", pretrained="../x"),
        lambda: zoo.create_model("mlp_mnist", pretrained="a/b"),
        lambda: zoo.load_pretrained("../x"),
        lambda: zoo.load_pretrained(".hidden"),
        lambda: zoo.model_card("a\\b"),
        lambda: zoo.model_card(""),
    ],
)
def test_unsafe_names_are_refused(hub_home, call):
    with pytest.raises(zoo.hub.UnsafeNameError, match="invalid"):
        call()


def test_unknown_architecture_and_missing_weights(hub_home):
    with pytest.raises(zoo.hub.UnknownModelError, match="unknown architecture 'nope'"):
        zoo.create_model("nope")
    with pytest.raises(zoo.hub.WeightsNotFoundError, match="no pretrained weights for 'gru_ou'"):
        zoo.create_model("gru_ou", pretrained=True)
    with pytest.raises(zoo.hub.WeightsNotFoundError, match="no weights gru_ou.x"):
        zoo.load_pretrained("gru_ou.x")
    with pytest.raises(zoo.hub.WeightsNotFoundError):
        zoo.load_pretrained(hub_home / "missing")


# ---------------------------------------------------------------- save and load


@eqx.filter_jit
def _trained_state(model, state, x):
    """Run one training-mode batch so BatchNorm's running statistics are not the initial ones."""
    _, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
    return state


@pytest.mark.parametrize("arch", ["mlp_mnist", "cnn_mnist", "gru_ou"])
def test_save_load_round_trip_is_bit_identical(hub_home, getkey, arch):
    config = TINY[arch]
    model, state = zoo.create_model(arch, key=getkey(), **config)
    x = jr.normal(getkey(), (4, *INPUTS[arch]))
    if arch == "cnn_mnist":
        state = _trained_state(model, state, x)
    folder = hub_home / "run" / "model"
    zoo.save_pretrained(folder, model, state, card=zoo.ModelCard(name=f"{arch}.t", config=config))
    loaded, loaded_state = zoo.load_pretrained(folder)
    _assert_bit_identical((model, state), (loaded, loaded_state))
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(
        np.asarray(_outputs(model, state, x)), np.asarray(_outputs(loaded, loaded_state, x))
    )


def test_loaded_models_are_in_inference_mode(hub_home):
    _publish("cnn_mnist.t", hub_home, dropout=0.5, **CNN)
    model, _ = zoo.create_model("cnn_mnist.t", pretrained=True)
    flags = [leaf for leaf in jax.tree.leaves(model) if isinstance(leaf, bool)]
    assert flags and all(flags)
    training = eqx.nn.inference_mode(model, False)
    assert not any(leaf for leaf in jax.tree.leaves(training) if isinstance(leaf, bool))


def test_card_records_what_was_saved(hub_home):
    model, state, card = _publish("cnn_mnist.t", hub_home, **CNN)
    folder = hub_home / "weights" / "cnn_mnist.t"
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "config.json", "weights.eqx"]
    data = (folder / "weights.eqx").read_bytes()
    assert card.weights_sha256 == hashlib.sha256(data).hexdigest()
    assert card.weights_size == len(data)
    assert card.num_params == sum(p.size for p in _arrays(model))
    assert set(card.versions) >= {"jax", "equinox", "zoo"}
    assert card.date is not None and card.date.endswith("+00:00")
    assert zoo.model_card("cnn_mnist.t") == card
    assert zoo.model_card(folder) == card
    assert json.loads((folder / "config.json").read_text()) == {
        "format": 1,
        "architecture": "cnn_mnist",
        "config": {"channels": [4, 4, 4, 4]},
    }
    text = card.format()
    assert "cnn_mnist.t" in text and f"  {card.weights_sha256}\n" in text


def test_card_round_trips_its_fields(hub_home):
    model, state = zoo.create_model("mlp_mnist", **MLP)
    card = zoo.ModelCard(
        name="mlp_mnist.full",
        config=MLP,
        dataset="fashion-mnist",
        metrics={"test_accuracy": np.float32(0.5), "epochs": 3},
        command="zoo train mnist_mlp --width 8",
        recipe_config={"width": 8, "layers": (1, 2)},
        preprocess=zoo.hub.Preprocess(layout="flat", normalize="standard", mean=72.9, std=90.0),
        description="a test",
    )
    saved = zoo.save_pretrained(hub_home / "m", model, state, card=card)
    assert saved.metrics == {"test_accuracy": 0.5, "epochs": 3}
    assert saved.recipe_config == {"width": 8, "layers": [1, 2]}
    assert zoo.model_card(hub_home / "m") == saved
    with pytest.raises(ValueError, match="JSON"):
        zoo.save_pretrained(
            hub_home / "m2", model, state, card=dataclasses.replace(card, metrics={"f": object()})
        )


def test_save_refuses_a_config_that_does_not_rebuild_the_model(hub_home):
    model, state = zoo.create_model("mlp_mnist", **MLP)
    with pytest.raises(zoo.hub.ArchitectureMismatchError, match=r"model.layers\[0\].weight"):
        card = zoo.ModelCard(name="mlp_mnist.x", config={**MLP, "width": 16})
        zoo.save_pretrained(hub_home / "m", model, state, card=card)
    with pytest.raises(zoo.hub.ArchitectureMismatchError, match="static field"):
        zoo.save_pretrained(
            hub_home / "m",
            model,
            state,
            card=zoo.ModelCard(name="mlp_mnist.x", config={**MLP, "activation": "tanh"}),
        )
    assert not (hub_home / "m").exists()


def test_save_replaces_atomically_and_leaves_other_files(hub_home):
    folder = hub_home / "run"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("{}\n")
    _, _, first = _publish("gru_ou.t", hub_home, golden=True)
    model, state = zoo.create_model("gru_ou", key=jr.PRNGKey(1))
    for card in (first, zoo.ModelCard(name="gru_ou.t")):
        saved = zoo.save_pretrained(folder, model, state, card=card)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["card.json", "config.json", "metrics.jsonl", "weights.eqx"]
    assert zoo.model_card(folder) == saved
    _assert_bit_identical(zoo.load_pretrained(folder)[0], eqx.nn.inference_mode(model))


def test_save_takes_none_for_a_stateless_state(hub_home):
    model, _ = zoo.create_model("mlp_mnist", **MLP)
    card = zoo.ModelCard(name="mlp_mnist.t", config=MLP)
    zoo.save_pretrained(hub_home / "m", model, None, card=card)
    loaded, state = zoo.load_pretrained(hub_home / "m")
    assert jax.tree.leaves(state) == []
    _assert_bit_identical(loaded, model)
    cnn, _ = zoo.create_model("cnn_mnist", **CNN)
    card = zoo.ModelCard(name="cnn_mnist.t", config=CNN)
    with pytest.raises(ValueError, match="stateful"):
        zoo.save_pretrained(hub_home / "c", cnn, None, card=card)


def test_corrupted_byte_is_refused(hub_home):
    _publish("mlp_mnist.t", hub_home, **MLP)
    path = hub_home / "weights" / "mlp_mnist.t" / "weights.eqx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.hub.ChecksumMismatchError, match="corrupt: its SHA-256"):
        zoo.load_pretrained("mlp_mnist.t")


def test_truncated_file_is_refused(hub_home):
    _publish("mlp_mnist.t", hub_home, **MLP)
    path = hub_home / "weights" / "mlp_mnist.t" / "weights.eqx"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 100])
    with pytest.raises(zoo.hub.TruncatedWeightsError, match=f"truncated: {size - 100:,} of"):
        zoo.create_model("mlp_mnist.t", pretrained=True)
    path.write_bytes(path.read_bytes() + bytes(200))
    with pytest.raises(zoo.hub.WeightsError, match=f"has {size + 100:,} bytes, but its card"):
        zoo.create_model("mlp_mnist.t", pretrained=True)


def _replace_weights(folder, tree):
    """Write `tree` as the folder's weights and update the card to match, as a forger would."""
    eqx.tree_serialise_leaves(folder / "weights.eqx", tree)
    data = (folder / "weights.eqx").read_bytes()
    card = json.loads((folder / "card.json").read_text())
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    card.update(weights_sha256=entry["sha256"], weights_size=entry["size"])
    card["files"]["weights.eqx"] = entry
    (folder / "card.json").write_text(json.dumps(card))


def test_weights_of_another_architecture_are_refused(hub_home):
    _publish("mlp_mnist.small", hub_home, width=8, depth=1)
    _publish("mlp_mnist.big", hub_home, width=16, depth=1)
    small, big = hub_home / "weights" / "mlp_mnist.small", hub_home / "weights" / "mlp_mnist.big"
    # The big file under the small config, the card forged to match: checksums pass.
    _replace_weights(small, zoo.load_pretrained(big))
    with pytest.raises(zoo.hub.ArchitectureMismatchError) as info:
        zoo.load_pretrained("mlp_mnist.small")
    message = str(info.value)
    assert "model.layers[0].weight" in message
    assert "(16, 784)" in message and "(8, 784)" in message
    # A file that holds fewer or more arrays than the architecture, with a matching card.
    model, state, _ = _publish("mlp_mnist.small", hub_home, width=8, depth=1)
    for tree, match in [(model.layers[0], "ends after 2 arrays"), ((model, state, 1.0), "more")]:
        _replace_weights(small, tree)
        with pytest.raises(zoo.hub.ArchitectureMismatchError, match=match):
            zoo.load_pretrained("mlp_mnist.small")
    # Weights of one architecture asked for as another.
    with pytest.raises(zoo.hub.ArchitectureMismatchError, match="for 'mlp_mnist', not 'gru_ou'"):
        zoo.create_model("gru_ou", pretrained=big)


def test_pretrained_overrides_must_fit_the_weights(hub_home):
    _publish("mlp_mnist.t", hub_home, **MLP)
    with pytest.raises(zoo.hub.ArchitectureMismatchError, match=r"model.layers\[0\].weight"):
        zoo.create_model("mlp_mnist.t", pretrained=True, width=16)
    model, _ = zoo.create_model("mlp_mnist.t", pretrained=True, activation="tanh")
    assert model.activation == "tanh"


def test_pretrained_forms_and_default_tag(hub_home, monkeypatch):
    saved, _, _ = _publish("mlp_mnist.only", hub_home, **MLP)
    folder = hub_home / "weights" / "mlp_mnist.only"
    for model, _ in (
        zoo.create_model("mlp_mnist", pretrained=True),  # the only tag there is
        zoo.create_model("mlp_mnist.only", pretrained=True),
        zoo.create_model("mlp_mnist", pretrained="only"),
        zoo.create_model("mlp_mnist", pretrained=folder),
        zoo.load_pretrained("mlp_mnist"),
    ):
        _assert_bit_identical(model, saved)
    # A tag without pretrained weights selects the architecture config only.
    fresh, _ = zoo.create_model("mlp_mnist.only", key=jr.PRNGKey(3))
    assert fresh.width == 8 and not np.array_equal(fresh.layers[0].weight, saved.layers[0].weight)
    with pytest.raises(ValueError, match="two different weights"):
        zoo.create_model("mlp_mnist.only", pretrained="other")
    _publish("mlp_mnist.second", hub_home, **MLP)
    with pytest.raises(zoo.hub.WeightsNotFoundError, match="no default"):
        zoo.create_model("mlp_mnist", pretrained=True)
    _publish("mlp_mnist.fashion", hub_home, key=jr.PRNGKey(5), **MLP)  # the default tag
    model, _ = zoo.create_model("mlp_mnist", pretrained=True)
    _assert_bit_identical(model, zoo.load_pretrained("mlp_mnist.fashion")[0])


def test_bundled_weights_come_before_user_weights(hub_home, tmp_path):
    bundled, _, _ = _publish("gru_ou.t", tmp_path / "bundled_parent", key=jr.PRNGKey(1))
    (tmp_path / "bundled_parent" / "weights").rename(tmp_path / "bundled")
    _publish("gru_ou.t", hub_home, key=jr.PRNGKey(2))
    assert zoo.list_models(pretrained=True) == ["gru_ou.t"]
    _assert_bit_identical(zoo.load_pretrained("gru_ou.t")[0], eqx.nn.inference_mode(bundled))


def test_num_classes_reinitialises_only_the_head(hub_home, getkey):
    saved, _, _ = _publish("mlp_mnist.t", hub_home, **MLP)
    with pytest.warns(zoo.hub.HeadReinitialisedWarning, match="num_classes=3"):
        model, _ = zoo.create_model("mlp_mnist.t", pretrained=True, num_classes=3, key=getkey())
    assert model.layers[-1].weight.shape == (3, 8)
    _assert_bit_identical(model.layers[:-1], saved.layers[:-1])
    assert model.layers[-1].weight.dtype == saved.layers[-1].weight.dtype
    with pytest.raises(zoo.hub.ArchitectureMismatchError, match="strict=True"):
        zoo.create_model("mlp_mnist.t", pretrained=True, num_classes=3, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, _ = zoo.create_model("mlp_mnist.t", pretrained=True, num_classes=10, strict=True)
    _assert_bit_identical(same, saved)


def test_num_classes_on_a_stateful_pretrained_model(hub_home, getkey):
    model, state = zoo.create_model("cnn_mnist", key=getkey(), **CNN)
    state = _trained_state(model, state, jr.normal(getkey(), (4, 1, 28, 28)))
    card = zoo.ModelCard(name="cnn_mnist.t", config=CNN)
    zoo.save_pretrained(hub_home / "weights" / "cnn_mnist.t", model, state, card=card)
    with pytest.warns(zoo.hub.HeadReinitialisedWarning):
        new, new_state = zoo.create_model("cnn_mnist.t", pretrained=True, num_classes=2)
    _assert_bit_identical(new_state, state)
    _assert_bit_identical(eqx.tree_at(lambda m: m.head, new, model.head), model)
    assert _outputs(new, new_state, jnp.zeros((2, 1, 28, 28))).shape == (2, 2)


# ---------------------------------------------------------------- URLs


class _Server:
    """A static file server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, root: Path):
        hits = self.hits = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_url_download_is_verified_and_cached(hub_home, tmp_path, monkeypatch):
    saved, _, card = _publish("gru_ou.pub", tmp_path / "site", golden=True)
    server = _Server(tmp_path / "site" / "weights")
    try:
        pin = zoo.hub.card_sha256(tmp_path / "site" / "weights" / "gru_ou.pub")
        url = f"{server.url}gru_ou.pub/#sha256={pin}"
        model, _ = zoo.load_pretrained(url)
        _assert_bit_identical(model, saved)
        fetched = set(server.hits)
        assert fetched == {
            f"/gru_ou.pub/{f}" for f in ("weights.eqx", "config.json", "card.json", "golden.npz")
        }
        cached = hub_home / "downloads" / pin
        assert sorted(p.name for p in cached.iterdir()) == [
            "card.json",
            "config.json",
            "golden.npz",
            "weights.eqx",
        ]
        # The second load, even offline, reads the cache and not the server.
        monkeypatch.setenv("ZOO_OFFLINE", "1")
        n = len(server.hits)
        model, state = zoo.create_model("gru_ou", pretrained=url)
        assert zoo.model_card(url) == card
        assert len(server.hits) == n
        zoo.hub.check_golden(cached, model, state)
        monkeypatch.delenv("ZOO_OFFLINE")
        # A wrong pin fails and leaves nothing in the cache.
        wrong = "0" * 64
        with pytest.raises(zoo.hub.ChecksumMismatchError, match=f"the URL pins {wrong}"):
            zoo.load_pretrained(f"{server.url}gru_ou.pub/weights.eqx#sha256={wrong}")
        assert sorted(p.name for p in (hub_home / "downloads").iterdir()) == [pin]
        with pytest.raises(zoo.hub.DownloadError, match="HTTP 404"):
            zoo.load_pretrained(f"{server.url}missing/#sha256={wrong}")
    finally:
        server.close()


def test_file_url(hub_home, tmp_path):
    saved, _, card = _publish("gru_ou.pub", tmp_path / "site")
    folder = tmp_path / "site" / "weights" / "gru_ou.pub"
    url = folder.as_uri() + f"#sha256={zoo.hub.card_sha256(folder)}"
    _assert_bit_identical(zoo.load_pretrained(url)[0], saved)


def test_offline_and_unpinned_urls_are_refused(hub_home, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    pinned = "https://example.invalid/zoo/gru_ou.x/#sha256=" + "a" * 64
    with pytest.raises(zoo.hub.OfflineError, match="ZOO_OFFLINE"):
        zoo.load_pretrained(pinned)
    with pytest.raises(zoo.hub.OfflineError):
        zoo.create_model("gru_ou", pretrained=pinned)
    with pytest.raises(ValueError, match="must pin the SHA-256"):
        zoo.load_pretrained("https://example.invalid/zoo/gru_ou.x/")
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        zoo.load_pretrained("ftp://example.invalid/x/#sha256=" + "a" * 64)
    assert not (hub_home / "downloads").exists()


# ---------------------------------------------------------------- golden pairs and preprocessing


def test_golden_pair_is_stored_and_checked(hub_home):
    model, _, _ = _publish("cnn_mnist.t", hub_home, golden=True, **CNN)
    folder = hub_home / "weights" / "cnn_mnist.t"
    loaded, state = zoo.load_pretrained(folder)
    assert zoo.hub.check_golden(folder, loaded, state) == 0.0
    with np.load(folder / "golden.npz", allow_pickle=False) as f:
        assert f["x"].shape == (2, 1, 28, 28) and f["y"].shape == (2, 10)
    bad = eqx.tree_at(lambda m: m.head.bias, loaded, loaded.head.bias + 1)
    with pytest.raises(zoo.hub.GoldenMismatchError, match="differ"):
        zoo.hub.check_golden(folder, bad, state)
    _publish("mlp_mnist.t", hub_home, **MLP)
    with pytest.raises(zoo.hub.WeightsNotFoundError, match="no golden pair"):
        zoo.hub.check_golden(
            hub_home / "weights" / "mlp_mnist.t", *zoo.load_pretrained("mlp_mnist.t")
        )


def test_preprocess_matches_the_recorded_scheme():
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    unit = zoo.hub.Preprocess(layout="flat")(images)
    assert unit.shape == (2, 784) and unit.dtype == np.float32
    np.testing.assert_array_equal(unit, images.reshape(2, 784).astype(np.float32) / 255)
    chw = zoo.hub.Preprocess(layout="chw", normalize="standard", mean=10.0, std=4.0)(images)
    assert chw.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(chw[:, 0], (images.astype(np.float32) - 10) / 4, rtol=1e-6)
    rows = zoo.hub.Preprocess(layout="hw", normalize=None)(images)
    np.testing.assert_array_equal(rows, images.astype(np.float32))
    with pytest.raises(ValueError, match="std"):
        zoo.hub.Preprocess(std=0.0)
    card = {"name": "mlp_mnist.x", "preprocess": {"layout": "nhwc"}}
    with pytest.raises(zoo.hub.WeightsError, match="not a valid model card"):
        zoo.ModelCard.from_json(card)


# ---------------------------------------------------------------- bundled weights


def _bundled() -> list[str]:
    root = _sources.bundled_weights_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


_BUNDLED = _bundled() or [pytest.param(None, marks=pytest.mark.skip("no bundled weights yet"))]


@pytest.mark.parametrize("name", _BUNDLED)
def test_bundled_weights_reproduce_their_golden_pair(name):
    folder = _sources.bundled_weights_dir() / name
    model, state = zoo.load_pretrained(folder)
    assert (folder / "golden.npz").is_file(), f"{name}: publish with `golden_input=`"
    zoo.hub.check_golden(folder, model, state)
    assert zoo.model_card(name).name == name


@pytest.mark.parametrize("name", _BUNDLED)
def test_bundled_cards_list_and_pin_every_file(name):
    folder = _sources.bundled_weights_dir() / name
    card = zoo.model_card(folder)
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != "card.json")
    assert sorted(card.files) == on_disk == ["config.json", "golden.npz", "weights.eqx"]
    for file, entry in card.files.items():
        data = (folder / file).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert card.files["weights.eqx"]["sha256"] == card.weights_sha256
    assert json.loads((folder / "config.json").read_text())["config"] == card.config
    pin = zoo.hub.card_sha256(folder)
    assert pin == hashlib.sha256((folder / "card.json").read_bytes()).hexdigest()


def test_save_lists_every_file_in_the_card(hub_home):
    _, _, card = _publish("mlp_mnist.t", hub_home, golden=True, **MLP)
    folder = hub_home / "weights" / "mlp_mnist.t"
    for file in ("weights.eqx", "config.json", "golden.npz"):
        data = (folder / file).read_bytes()
        assert card.files[file] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert zoo.model_card(folder) == card
    _, _, card = _publish("mlp_mnist.t", hub_home, **MLP)  # saved again without golden inputs
    assert sorted(card.files) == ["config.json", "weights.eqx"]
    assert not (folder / "golden.npz").exists()


@pytest.mark.parametrize("name", _BUNDLED)
def test_bundled_weights_reach_their_card_accuracy(name):
    from zoo.data import DatasetNotFoundError, load
    from zoo.train import classification_metrics, evaluate

    card = zoo.model_card(name)
    reference = card.metrics.get("test_accuracy")
    if reference is None or card.preprocess is None or card.dataset is None:
        pytest.skip(f"{name}: the card records no test accuracy to reproduce")
    try:
        images, labels, _ = load(card.dataset, "test", download=False)
    except DatasetNotFoundError:
        pytest.skip(f"{card.dataset} is not on this machine")
    model, state = zoo.load_pretrained(name)
    metrics = evaluate(
        classification_metrics(),
        model,
        state if jax.tree.leaves(state) else None,
        {"image": card.preprocess(images), "label": labels},
        batch_size=1000,
    )
    assert abs(metrics["accuracy"] - reference) <= 1e-3


# ---------------------------------------------------------------- weight tables and publishing


def _table_entries() -> list[str]:
    return sorted(
        f"{arch}.{tag}"
        for arch in zoo.models.registered_architectures()
        for tag in zoo.models.get_model_spec(arch).weights
    )


def test_every_bundled_folder_is_in_its_architectures_table():
    bundled = [name for name in _bundled()]
    tables = {
        name
        for name in _table_entries()
        if zoo.models.get_model_spec(name.partition(".")[0]).weights[name.partition(".")[2]].bundled
    }
    assert sorted(tables) == bundled


@pytest.mark.parametrize("name", _table_entries())
def test_weight_table_entries_agree_with_their_cards(name):
    arch, _, tag = name.partition(".")
    entry = zoo.models.get_model_spec(arch).weights[tag]
    assert name in zoo.list_models(pretrained=True)
    card = zoo.model_card(name)
    assert card.name == name and card.dataset == entry.dataset
    for metric, value in entry.metrics.items():
        assert card.metrics[metric] == pytest.approx(value)
    if entry.preprocess is None:
        assert card.preprocess is None
    else:
        assert card.preprocess == zoo.hub.Preprocess(**entry.preprocess)


def test_check_publish_tag_refuses_zoos_own_tags():
    assert zoo.hub.check_publish_tag("mlp_mnist", "my-run") == "mlp_mnist.my-run"
    for name in _table_entries():
        arch, _, tag = name.partition(".")
        with pytest.raises(zoo.hub.PublishTagError, match=rf"{name} is one of zoo's own"):
            zoo.hub.check_publish_tag(arch, tag)
    with pytest.raises(zoo.hub.UnsafeNameError):
        zoo.hub.check_publish_tag("mlp_mnist", "../x")
    with pytest.raises(zoo.hub.UnknownModelError):
        zoo.hub.check_publish_tag("no_such_arch", "x")


def test_check_publish_tag_sees_bundled_folders(hub_home):
    model, state = zoo.create_model("gru_ou")
    folder = _sources.BUNDLED_DIR / "gru_ou.extra"
    zoo.save_pretrained(folder, model, state, card=zoo.ModelCard(name="gru_ou.extra"))
    with pytest.raises(zoo.hub.PublishTagError, match=r"zoo uses: extra, ou\)"):
        zoo.hub.check_publish_tag("gru_ou", "extra")
    zoo.hub.check_publish_tag("gru_ou", "other")


def test_a_weight_table_url_entry_is_found_by_name(hub_home, tmp_path):
    saved, _, card = _publish("gru_ou.pub", tmp_path / "site")
    folder = tmp_path / "site" / "weights" / "gru_ou.pub"
    url = folder.as_uri() + f"#sha256={zoo.hub.card_sha256(folder)}"

    def builder(*, key, **kwargs):
        return eqx.nn.make_with_state(zoo.GRU)(**kwargs, key=key)

    weights = {"pub": zoo.hub.WeightSet(url=url, dataset="fashion-mnist")}
    zoo.register_model(name="test_hub_url", weights=weights)(builder)
    try:
        assert "test_hub_url.pub" in zoo.list_models(pretrained=True)
        # The published folder is gru_ou's: the architecture check names the difference.
        with pytest.raises(zoo.hub.ArchitectureMismatchError, match="'gru_ou', not"):
            zoo.create_model("test_hub_url.pub", pretrained=True)
        model, _ = zoo.load_pretrained("test_hub_url.pub")
        _assert_bit_identical(model, saved)
        assert zoo.model_card("test_hub_url").weights_sha256 == card.weights_sha256
    finally:
        _registry._REGISTRY.pop("test_hub_url", None)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_save_reads_the_config_from_the_model(hub_home, name):
    """No hand-written `config`: what save_pretrained stores rebuilds the model exactly."""
    overrides = dict(TINY[name])
    model, state = zoo.create_model(name, key=jr.PRNGKey(2), **overrides)
    folder = str(hub_home / "saved" / f"{name}.mine")
    card = zoo.save_pretrained(folder, model, state, card=zoo.ModelCard(name=f"{name}.mine"))
    rebuilt = eqx.filter_eval_shape(zoo.create_model, name, **card.config)
    assert jax.tree.structure(rebuilt) == jax.tree.structure((model, state))
    loaded, loaded_state = zoo.load_pretrained(folder)  # a str naming a folder
    _assert_bit_identical((loaded, loaded_state), (model, state))
    again, _ = zoo.create_model(name, pretrained=folder)
    _assert_bit_identical(again, model)
    # Only what differs from the builder's defaults is stored.
    for key, value in card.config.items():
        assert key in zoo.hub.constructor_config(model)
        assert value is not None


def test_save_stores_num_classes_and_per_axis_arguments(hub_home):
    model, state = zoo.create_model(
        "cnn_mnist",
        num_classes=4,
        channels=(2, 3),
        kernel_sizes=((3, 5), 3),
        strides=1,
        batch_norm=(True, False),
        in_size=(8, 6),
    )
    card = zoo.save_pretrained(hub_home / "c", model, state, card=zoo.ModelCard(name="cnn_mnist.c"))
    assert card.config == {
        "num_classes": 4,
        "channels": [2, 3],
        "kernel_sizes": [[3, 5], [3, 3]],
        "strides": [[1, 1], [1, 1]],
        "pools": [[1, 1], [1, 1]],  # per layer: two layers, where the default has four
        "batch_norm": [True, False],
        "in_size": [8, 6],
    }
    loaded, loaded_state = zoo.load_pretrained(hub_home / "c")
    _assert_bit_identical((loaded, loaded_state), (model, state))


def test_the_hub_docstring_example_registers_saves_and_loads_a_model_of_your_own():
    """The runnable example in `zoo.hub`'s docstring, run as written."""
    doc = zoo.hub.__doc__ or ""
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    try:
        exec(compile(code, "zoo.hub docstring", "exec"), {"__name__": "docstring_example"})
        assert "tiny_net" in zoo.list_models()
        assert zoo.models.get_model_spec("tiny_net").description.startswith("A one-layer")
    finally:
        _registry._REGISTRY.pop("tiny_net", None)


def test_a_user_model_round_trips_bit_identically_through_a_str_path(tmp_path):
    class Scaled(eqx.Module):
        weight: jax.Array
        bias: jax.Array
        in_size: int = eqx.field(static=True)
        num_classes: int = eqx.field(static=True)

        def __init__(self, in_size=3, num_classes=2, *, key):
            self.in_size, self.num_classes = in_size, num_classes
            self.weight = jr.normal(key, (num_classes, in_size))
            self.bias = jnp.zeros(num_classes)

        def __call__(self, x, *, key=None):
            return self.weight @ x + self.bias

    @zoo.register_model(head=lambda m: (m.weight, m.bias))
    def test_hub_scaled(*, key, **kwargs):
        return eqx.nn.make_with_state(Scaled)(**kwargs, key=key)

    try:
        model, state = zoo.create_model("test_hub_scaled", in_size=6, num_classes=4)
        folder = tmp_path / "anywhere" / "scaled"
        x = jr.normal(jr.PRNGKey(5), (3, 6))
        card = zoo.save_pretrained(
            str(folder), model, None, card=zoo.ModelCard(name="test_hub_scaled.t"), golden_input=x
        )
        assert card.config == {"in_size": 6, "num_classes": 4}
        loaded, loaded_state = zoo.create_model("test_hub_scaled", pretrained=str(folder))
        _assert_bit_identical(loaded, model)
        assert jax.tree.leaves(loaded_state) == []
        zoo.hub.check_golden(str(folder), loaded, None)
        assert zoo.model_card(str(folder)).name == "test_hub_scaled.t"
    finally:
        _registry._REGISTRY.pop("test_hub_scaled", None)


def test_bundled_cards_record_a_command_users_can_rerun():
    # Not the publisher's own --publish/--publish-dir/--workdir: those only steered the run
    # (and --publish with a bundled tag is refused).
    import zoo

    for name in zoo.list_models(pretrained=True):
        command = zoo.model_card(name).command
        assert command is not None and command.startswith("zoo train "), name
        assert not any(f in command for f in ("--publish", "--workdir")), (name, command)
