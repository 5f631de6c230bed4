"""Each recipe on a tiny config: it learns (loss falls) and writes every output."""

import json
import os
from pathlib import Path

import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)


def _records(workdir: Path, kind: str) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Recipes enable JAX's persistent compilation cache; keep the tests' out of ~/.cache.
    monkeypatch.setenv("ZOO_HOME", str(tmp_path_factory.getbasetemp() / "zoo-cache"))


@needs_fashion
@pytest.mark.parametrize("recipe", ["mnist_mlp", "mnist_cnn"])
def test_image_recipes_learn_and_write_outputs(tmp_path, recipe):
    import importlib

    module = importlib.import_module(f"recipes.{recipe}")
    # 40 steps of BatchNorm: a faster running average. Flips exercise augmentation.
    short = {"bn_momentum": 0.9, "augment": "flip"} if recipe == "mnist_cnn" else {}
    config = module.Config(
        **short,
        epochs=2,
        train_examples=400,
        test_examples=200,
        batch_size=20,
        steps_per_dispatch=5,
        progress=False,
    )
    model, state, history = module.train(config, str(tmp_path))
    epochs = _records(tmp_path, "epoch")
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[1]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    for name in ("config.json", "metrics.jsonl", "training.png", "results.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_accuracy"] == pytest.approx(epochs[-1]["test_accuracy"])


def test_ou_gru_learns_and_writes_outputs(tmp_path):
    from recipes import ou_gru

    config = ou_gru.Config(
        batches=60,
        eval_every=20,
        steps_per_dispatch=10,
        learning_rate=3e-3,
        eval_sequences=256,
        progress=False,
    )
    model, _, history = ou_gru.train(config, str(tmp_path))
    epochs = _records(tmp_path, "epoch")
    assert len(epochs) == 3 and epochs[-1]["test_mse"] < epochs[0]["test_mse"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["free_running_mse"] > 0 and (tmp_path / "training.png").stat().st_size > 0


def test_linear_regression_recipe_reaches_least_squares(tmp_path):
    from recipes import linear_regression

    config = linear_regression.Config(
        sgd_steps=400, steps_per_dispatch=200, learning_rate=0.02, progress=False
    )
    sgd, gd = linear_regression.train(config, str(tmp_path))
    assert sgd["r2"] > 0.99
    # Standardised x: each step shrinks the error by 0.9, so a step under 1e-3 means an
    # error under 9e-3 (in x's units it is smaller still for this data).
    assert gd["features"] == "standardized" and gd["iterations"] > 10
    assert gd["max_abs_difference"] < 1e-2 and gd["max_abs_difference_x_units"] < 1e-2
    for name in ("sgd.png", "gradient_descent.png", "results.json", "config.json"):
        assert (tmp_path / name).stat().st_size > 0, name


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--epochs", "many"],
            "error: mnist_mlp: --epochs expects a value of type int; got 'many'",
        ),
        (["--lr", "0.1"], "error: mnist_mlp: unknown config field --lr; known: --dataset"),
        (["--dataset", "cifar"], "error: mnist_mlp: --dataset must be one of fashion-mnist, mnist"),
        (["--epochs"], "error: mnist_mlp: --epochs needs a value"),
    ],
)
def test_bad_command_lines_get_one_line_errors(capsys, argv, message):
    from recipes import mnist_mlp

    assert mnist_mlp.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message)
    assert "\n" not in err and "Traceback" not in err


def test_missing_dataset_is_one_line_with_instructions(tmp_path, capsys, monkeypatch):
    from recipes import mnist_mlp

    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "nothing"))
    code = mnist_mlp.main(
        ["--dataset", "mnist", "--download", "false", "--workdir", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert "train-images-idx3-ubyte.gz" in err and "--data-dir" in err


def test_workdir_holding_a_run_is_not_overwritten(tmp_path, capsys):
    from recipes import linear_regression

    (tmp_path / "metrics.jsonl").write_text('{"kind": "epoch"}\n')
    code = linear_regression.main(["--workdir", str(tmp_path)])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text() == '{"kind": "epoch"}\n'


def test_help_lists_every_config_field(capsys):
    from recipes import ou_gru

    assert ou_gru.main(["--help"]) == 0
    out = capsys.readouterr().out
    for field in ("--hidden-size", "--batch-size", "--learning-rate", "--batches", "--workdir"):
        assert field in out
    assert os.environ.get("ZOO_HOME")  # the fixture's, not the user's


@needs_fashion
def test_bad_label_smoothing_is_one_line_and_writes_nothing(tmp_path, capsys):
    from recipes import mnist_cnn

    workdir = tmp_path / "run"
    assert mnist_cnn.main(["--label-smoothing", "1.5", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: mnist_cnn: --label-smoothing: label_smoothing must be in [0, 1), got 1.5"
    assert not workdir.exists()
