import gzip
import hashlib
import json
import struct
import sys
import types
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pytest

import zoo
import zoo.cli
from zoo.hub import _sources

MLP: dict[str, Any] = {"width": 8, "depth": 1}


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """An empty `$ZOO_HOME` and an empty bundled folder, so only this test's weights exist."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.setattr(_sources, "BUNDLED_DIR", tmp_path / "bundled")
    return tmp_path / "home"


def _run(capsys, *argv):
    code = zoo.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(err, *fragments):
    assert err.count("\n") == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def _publish(home, name="mlp_mnist.t", **card_fields):
    model, state = zoo.create_model("mlp_mnist", **MLP)
    card = zoo.ModelCard(name=name, config=MLP, **card_fields)
    return model, state, zoo.save_pretrained(home / "weights" / name, model, state, card=card)


def test_help_describes_every_command_and_option(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for command in ("list", "info", "summary", "train", "eval"):
        assert command in out
    expected = {
        "list": ["PATTERN", "--pretrained"],
        "info": ["NAME", "--json"],
        "summary": ["NAME", "--pretrained"],
        "train": ["RECIPE", "ARGS"],
        "eval": ["NAME", "--dataset", "--data-dir", "--no-download", "--batch-size", "--tolerance"],
    }
    for command, options in expected.items():
        code, out, _ = _run(capsys, command, "--help")
        assert code == 0
        for option in options:
            assert option in out, (command, option)


def test_usage_errors_are_one_line(capsys):
    code, _, err = _run(capsys, "bogus")
    assert code == 2
    _assert_one_line_error(err, "invalid choice: 'bogus'", "zoo --help")
    code, _, err = _run(capsys)
    assert code == 2
    _assert_one_line_error(err)
    code, _, err = _run(capsys, "eval", "mlp_mnist", "--dataset", "cifar")
    assert code == 2
    _assert_one_line_error(err, "--dataset", "cifar")


def test_list(capsys, hub_home):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == zoo.list_models()
    assert "784-512-512-10" in out  # the builder's description
    code, out, _ = _run(capsys, "list", "cnn*")
    assert [line.split()[0] for line in out.splitlines()] == ["cnn_mnist", "cnn_mnist_strong"]
    code, out, err = _run(capsys, "list", "--pretrained")
    assert code == 0 and out == "" and "no pretrained weights match" in err
    _publish(hub_home, dataset="fashion-mnist", metrics={"test_accuracy": 0.8941})
    code, out, _ = _run(capsys, "list", "--pretrained", "mlp*")
    assert out.split() == ["mlp_mnist.t", "fashion-mnist", "test", "accuracy", "89.41%"]


def test_info(capsys, hub_home):
    _, _, card = _publish(hub_home, dataset="fashion-mnist", command="zoo train mnist_mlp")
    code, out, _ = _run(capsys, "info", "mlp_mnist.t")
    assert code == 0
    for text in ("mlp_mnist.t", card.weights_sha256, "zoo train mnist_mlp", "fashion-mnist"):
        assert text in out
    code, out, _ = _run(capsys, "info", str(hub_home / "weights" / "mlp_mnist.t"), "--json")
    assert code == 0 and json.loads(out)["weights_sha256"] == card.weights_sha256


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["info", "nope.t"], ["zoo info: error:", "unknown architecture 'nope'"]),
        (["info", "gru_ou.t"], ["no weights gru_ou.t"]),
        (["info", "Mlp"], ["invalid model name 'Mlp'"]),
        (["info", "./missing"], ["does not exist"]),
        (["summary", "../x"], ["does not exist"]),
        (["info", "https://example.invalid/x/"], ["must pin the SHA-256"]),
    ],
)
def test_errors_are_one_line(capsys, hub_home, argv, fragments):
    code, out, err = _run(capsys, *argv)
    assert code == 1 and out == ""
    _assert_one_line_error(err, *fragments)


def test_summary(capsys, hub_home):
    model, state, _ = _publish(hub_home)
    code, out, _ = _run(capsys, "summary", "mlp_mnist.t")
    assert code == 0
    assert out.strip() == zoo.summary(eqx.nn.inference_mode(model))
    cnn: dict[str, Any] = {"channels": [4, 4, 4, 4]}
    model, state = zoo.create_model("cnn_mnist", **cnn)
    card = zoo.ModelCard(name="cnn_mnist.t", config=cnn)
    zoo.save_pretrained(hub_home / "weights" / "cnn_mnist.t", model, state, card=card)
    code, out, _ = _run(capsys, "summary", str(hub_home / "weights" / "cnn_mnist.t"))
    assert code == 0 and "Total: 998 parameters" in out and "State: 27 values" in out


def test_train_dispatches_to_the_recipe(capsys, monkeypatch):
    calls = []
    package = zoo.cli._recipes_package()  # zoo.recipes when installed, recipes in a checkout
    assert package is not None
    fake = types.ModuleType(f"{package.__name__}.fake")
    fake.main = lambda argv: calls.append(argv) or 3  # pyright: ignore[reportAttributeAccessIssue]
    monkeypatch.setitem(sys.modules, f"{package.__name__}.fake", fake)
    monkeypatch.setattr(zoo.cli, "_known_recipes", lambda: ["fake", "other"])
    code, _, _ = _run(capsys, "train", "fake", "--epochs", "2", "--help")
    assert code == 3 and calls == [["--epochs", "2", "--help"]]
    code, _, err = _run(capsys, "train", "nope", "--epochs", "2")
    assert code == 2
    _assert_one_line_error(err, "unknown recipe 'nope'", "known recipes: fake, other")


def test_train_passes_everything_to_the_recipe(capsys, tmp_path):
    # The real recipe behind `zoo train`: its tyro help, its one-line value errors.
    code, out, _ = _run(capsys, "train", "ou_gru", "--help")
    assert code == 0 and "--hidden-size" in out and "--resume, --no-resume" in out
    workdir = tmp_path / "run"
    code, _, err = _run(capsys, "train", "ou_gru", "--batches", "0", "--workdir", str(workdir))
    assert code == 2
    _assert_one_line_error(err, "ou_gru: --batches must be >= 1; got 0")
    code, _, err = _run(capsys, "train", "ou_gru", "--no-such-flag")
    assert code == 2 and "--no-such-flag" in err
    assert not workdir.exists()


def _write_test_split(folder, images, labels):
    def idx(array):
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        return gzip.compress(header + array.tobytes(), mtime=0)

    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(idx(images))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(idx(labels))


def test_eval_measures_accuracy_and_compares_with_the_card(capsys, hub_home, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 50, dtype=np.uint8)
    _write_test_split(tmp_path / "data" / "fashion-mnist", images, labels)
    pre = zoo.hub.Preprocess(layout="flat", normalize="unit")
    model, state = zoo.create_model("mlp_mnist", **MLP)
    logits = jax.vmap(model)(pre(images))
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))
    argv = [
        "eval",
        "mlp_mnist.t",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    for claimed, code_expected in ((accuracy, 0), (accuracy + 0.05, 1)):
        card = zoo.ModelCard(
            name="mlp_mnist.t",
            config=MLP,
            dataset="fashion-mnist",
            metrics={"test_accuracy": claimed},
            preprocess=pre,
        )
        zoo.save_pretrained(hub_home / "weights" / "mlp_mnist.t", model, state, card=card)
        code, out, err = _run(capsys, *argv, "--batch-size", "16")
        assert code == code_expected, err
        assert f"test accuracy {100 * accuracy:.2f}% on fashion-mnist (50 images)" in out
    _assert_one_line_error(err, "differs from the card's by more than 0.1 points")
    # A card without preprocessing cannot be evaluated on images.
    _publish(hub_home, name="mlp_mnist.raw")
    code, _, err = _run(capsys, "eval", "mlp_mnist.raw", "--dataset", "fashion-mnist")
    assert code == 1
    _assert_one_line_error(err, "records no `preprocess`")


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0
    assert out == f"{zoo._version.DISTRIBUTION} {zoo._version.__version__}\n"
    assert out.startswith("equinox-zoo ")


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--batch-size", "0", "argument --batch-size: must be a positive integer, got '0'"),
        ("--batch-size", "-5", "argument --batch-size"),
        ("--tolerance", "-1", "argument --tolerance: must be a fraction between 0 and 1"),
        ("--tolerance", "nan", "argument --tolerance"),
    ],
)
def test_eval_refuses_bad_numbers_in_one_line(capsys, hub_home, flag, value, fragment):
    _publish(hub_home)
    code, out, err = _run(capsys, "eval", "mlp_mnist.t", "--dataset", "mnist", flag, value)
    assert code == 2 and out == ""
    _assert_one_line_error(err, fragment)


_MALFORMED = {
    "metrics": (["a", "list"], "`metrics` must be a JSON object"),
    "weights_size": ("big", "`weights_size` must be a non-negative integer"),
    "num_params": ("many", "`num_params` must be a non-negative integer"),
    "config": ("width=8", "`config` must be a JSON object"),
    "description": (3, "`description` must be a string"),
    "preprocess": ({"layout": "sideways"}, "unknown `layout`"),
    "name": ("../up.x", "invalid model name"),
}


@pytest.mark.parametrize("field", sorted(_MALFORMED))
def test_malformed_cards_are_one_line_errors(capsys, hub_home, field):
    value, fragment = _MALFORMED[field]
    _publish(hub_home, dataset="fashion-mnist")
    _publish(hub_home, name="mlp_mnist.good", dataset="fashion-mnist")
    path = hub_home / "weights" / "mlp_mnist.t" / "card.json"
    card = json.loads(path.read_text())
    card[field] = value
    path.write_text(json.dumps(card))
    for argv in (["info", "mlp_mnist.t"], ["eval", "mlp_mnist.t", "--dataset", "mnist"]):
        code, out, err = _run(capsys, *argv)
        assert code == 1 and out == ""
        _assert_one_line_error(err, f"zoo {argv[0]}: error:", "not a valid model card", fragment)
    # The listing names the bad card on one line and still lists the good one.
    code, out, err = _run(capsys, "list", "--pretrained")
    assert code == 1 and out.split()[0] == "mlp_mnist.good"
    _assert_one_line_error(err, "zoo list: error: mlp_mnist.t:", fragment)


@pytest.mark.parametrize(
    "config, fragment",
    [({"width": "wide", "depth": 1}, "does not build 'mlp_mnist'"), ([8], "'config' (an object)")],
)
def test_malformed_configs_are_one_line_errors(capsys, hub_home, config, fragment):
    _publish(hub_home, preprocess=zoo.hub.Preprocess(layout="flat"))
    folder = hub_home / "weights" / "mlp_mnist.t"
    data = json.loads((folder / "config.json").read_text())
    data["config"] = config
    # As a publisher would write it: card and config agree, checksums match.
    raw = json.dumps(data).encode()
    (folder / "config.json").write_bytes(raw)
    card = json.loads((folder / "card.json").read_text())
    card["files"]["config.json"] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    card["config"] = config if isinstance(config, dict) else {}
    (folder / "card.json").write_text(json.dumps(card))
    for argv in (["summary", "mlp_mnist.t"], ["eval", str(folder), "--dataset", "mnist"]):
        code, out, err = _run(capsys, *argv)
        assert code == 1 and out == ""
        _assert_one_line_error(err, fragment)


def test_control_characters_in_cards_are_escaped(capsys, hub_home):
    _publish(hub_home, dataset="fashion\x1b]0;owned\x07", metrics={"test_accuracy": 0.5})
    path = hub_home / "weights" / "mlp_mnist.t" / "card.json"
    card = json.loads(path.read_text())
    card["description"] = "x\n\x1b[32mweights sha256 OK\x1b[0m\r"
    card["command"] = "zoo train \u202emnist"
    path.write_text(json.dumps(card))
    for argv in (
        ["info", "mlp_mnist.t"],
        ["list", "--pretrained"],
        ["info", "mlp_mnist.t", "--json"],
    ):
        code, out, err = _run(capsys, *argv)
        assert code == 0, err
        for raw in ("\x1b", "\x07", "\r", "\u202e"):
            assert raw not in out, (argv, raw)
    code, out, _ = _run(capsys, "info", "mlp_mnist.t")
    assert "fashion\\x1b]0;owned\\x07" in out
    assert [line.split()[0] for line in out.splitlines()].count("weights") == 2  # sha, size
    assert not any(line.startswith("\\x1b[32mweights") for line in out.splitlines())


def test_a_damaged_download_cache_is_one_line(capsys, hub_home, tmp_path, monkeypatch):
    _publish(tmp_path / "site")
    folder = tmp_path / "site" / "weights" / "mlp_mnist.t"
    pin = zoo.hub.card_sha256(folder)
    url = folder.as_uri() + f"/#sha256={pin}"
    assert _run(capsys, "info", url)[0] == 0
    cached = hub_home / "downloads" / pin
    (cached / "weights.eqx").write_bytes(b"damaged")
    code, out, err = _run(capsys, "summary", url)
    assert code == 0 and "Total:" in out
    _assert_one_line_error(err, "zoo: warning: removed the damaged download cache", str(cached))
    (cached / "card.json").write_text("{}")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    code, out, err = _run(capsys, "info", url)
    assert code == 0  # file:// is not a network download: fetched again offline too
    assert "removed the damaged download cache" in err and err.count("\n") == 1
