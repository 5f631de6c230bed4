"""Each recipe on a tiny config: it learns (loss falls) and writes every output."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
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


@needs_fashion
@pytest.mark.parametrize(
    "recipe, settings",
    [
        ("mnist_resnet", {"learning_rate": 0.05, "bn_momentum": 0.5, "epochs": 2}),
        ("mnist_vit", {"depth": 2, "dim": 32, "learning_rate": 3e-3, "epochs": 3}),
    ],
)
def test_vision_recipes_learn(tmp_path, recipe, settings):
    import importlib

    module = importlib.import_module(f"recipes.{recipe}")
    config = module.Config(
        **settings,
        train_examples=400,
        test_examples=200,
        batch_size=20,
        warmup_epochs=0.25,
        progress=False,
    )
    module.train(config, str(tmp_path))
    epochs = _records(tmp_path, "epoch")
    assert [r["epoch"] for r in epochs] == list(range(1, settings["epochs"] + 1))
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    card = json.loads((tmp_path / "config.json").read_text())
    # The run's config records what was passed and the recipe's own defaults.
    assert card["warmup_epochs"] == 0.25 and card["flip"] is module.Config().flip


def test_vit_recipe_refuses_a_width_the_heads_do_not_divide(tmp_path, capsys):
    from recipes import mnist_vit

    argv = ["--dim", "30", "--num-heads", "4", "--workdir", str(tmp_path / "run")]
    assert mnist_vit.main(argv) != 0
    _one_line_error(capsys, "--dim 30 must be divisible by --num-heads 4")


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


RECIPES = [
    "mnist_mlp",
    "mnist_cnn",
    "mnist_resnet",
    "mnist_vit",
    "ou_gru",
    "linear_regression",
    "finetune",
]


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--epochs", "many"], "--epochs"),
        (["--lr", "0.1"], "--lr"),
        (["--dataset", "cifar"], "--dataset"),
        (["--epochs"], "--epochs"),
        (["--resume", "yes"], "yes"),  # a boolean is a bare flag: --resume / --no-resume
    ],
)
def test_bad_command_lines_exit_2_naming_the_flag(tmp_path, capsys, argv, flag):
    from recipes import mnist_mlp

    assert mnist_mlp.main([*argv, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "recipe, argv, message",
    [
        ("mnist_mlp", ["--epochs", "0"], "mnist_mlp: --epochs must be >= 1; got 0"),
        ("mnist_mlp", ["--batch-size", "0"], "mnist_mlp: --batch-size must be >= 1; got 0"),
        (
            "mnist_mlp",
            ["--train-examples", "-500"],
            "mnist_mlp: --train-examples must be >= 1; got -500",
        ),
        (
            "mnist_mlp",
            ["--steps-per-dispatch", "0"],
            "mnist_mlp: --steps-per-dispatch must be >= 1; got 0",
        ),
        (
            "mnist_mlp",
            ["--learning-rate", "nan"],
            "mnist_mlp: --learning-rate must be a finite number; got nan",
        ),
        ("mnist_mlp", ["--learning-rate", "-1"], "--learning-rate must be > 0; got -1.0"),
        (
            "mnist_cnn",
            ["--bn-momentum", "2"],
            "mnist_cnn: --bn-momentum must be in [0, 1); got 2.0",
        ),
        ("mnist_cnn", ["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1); got 1.5"),
        ("ou_gru", ["--log-every", "0"], "ou_gru: --log-every must be >= 1; got 0"),
        ("ou_gru", ["--tau", "inf"], "ou_gru: --tau must be a finite number; got inf"),
        ("ou_gru", ["--num-processes", "0"], "ou_gru: --num-processes must be >= 1; got 0"),
        ("ou_gru", ["--batches", "150"], "--batches (150) must be a multiple of --eval-every"),
        ("linear_regression", ["--gd-tolerance", "0"], "--gd-tolerance must be > 0; got 0.0"),
        ("finetune", ["--budgets", "10", "-1"], "finetune: --budgets must be >= 0; got -1"),
        ("finetune", ["--test-fraction", "1"], "finetune: --test-fraction must be in (0, 1)"),
        ("mnist_mlp", ["--publish", "My/Tag"], "mnist_mlp: --publish: invalid weights tag"),
        ("ou_gru", ["--publish", "..x"], "ou_gru: --publish: invalid weights tag"),
        ("linear_regression", ["--publish", "t"], "--publish: this recipe saves no model"),
        ("mnist_mlp", ["--trackers"], "--trackers needs at least one"),
    ],
)
def test_bad_values_are_one_line_before_anything_is_written(
    tmp_path, capsys, recipe, argv, message
):
    import importlib

    module = importlib.import_module(f"recipes.{recipe}")
    workdir = tmp_path / "run"
    assert module.main([*argv, "--workdir", str(workdir), "--no-progress"]) == 2
    err = _one_line_error(capsys, message)
    assert err.startswith("error: ")
    assert not workdir.exists()


def test_every_numeric_field_declares_its_bounds():
    import dataclasses
    import importlib
    import typing

    from recipes import _config

    def numeric(kind) -> bool:
        args = typing.get_args(kind)
        return kind in (int, float) or any(numeric(a) for a in args if a is not type(None))

    for recipe in RECIPES:
        config_cls = importlib.import_module(f"recipes.{recipe}").Config
        classes = [config_cls, _config.Distributed]
        for cls in classes:
            hints = typing.get_type_hints(cls, include_extras=False)
            for field in dataclasses.fields(cls):
                if numeric(hints[field.name]):
                    assert _config.BOUNDS in field.metadata, f"{recipe}: {field.name}"


def test_validation_reads_the_bounds():
    from recipes import _config, ou_gru

    _config.validate("ou_gru", ou_gru.Config())  # the defaults run
    for field, value, problem in [
        ("sigma", -0.1, "must be >= 0"),
        ("dt", 0.0, "must be > 0"),
        ("x0", float("nan"), "must be a finite number"),
        ("eval_sequences", 0, "must be >= 1"),
    ]:
        config = ou_gru.Config(**{field: value})
        with pytest.raises(_config.ConfigError, match=problem):
            _config.validate("ou_gru", config)
    # Library callers get the same check from train(), before anything is written.
    with pytest.raises(_config.ConfigError, match="--hidden-size must be >= 1"):
        ou_gru.train(ou_gru.Config(hidden_size=0), "/nonexistent/never-created")


def test_booleans_are_flags_and_tuples_take_several_values():
    from recipes import _cli, finetune, mnist_mlp

    config = _cli.parse("mnist_mlp", mnist_mlp.Config, ["--resume", "--no-progress"])
    assert config.resume is True and config.progress is False
    assert _cli.parse("mnist_mlp", mnist_mlp.Config, ["--no-download"]).download is False
    config = _cli.parse("finetune", finetune.Config, ["--budgets", "5", "0", "--modes", "probe"])
    assert config.budgets == (5, 0) and config.modes == ("probe",)
    config = _cli.parse("mnist_mlp", mnist_mlp.Config, ["--trackers", "jsonl", "tensorboard"])
    assert config.trackers == ("jsonl", "tensorboard")
    dist = _cli.parse(
        "ou_gru",
        mnist_mlp.Config,
        ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "1"],
    ).distributed
    assert (dist.coordinator, dist.num_processes, dist.process_id) == ("h:1", 2, 1)


def test_steering_fields_are_marked_once():
    import dataclasses

    import zoo.train
    from recipes import mnist_cnn

    marked = {f.name for f in dataclasses.fields(mnist_cnn.Config) if zoo.train.is_steering(f)}
    assert marked == {
        "devices",
        "resume",
        "progress",
        "log_every",
        "trackers",
        "publish",
        "publish_dir",
        "workdir",
        "distributed",
    }


def test_command_line_reproduces_the_config():
    import shlex

    from recipes import _cli, finetune, mnist_cnn

    config = mnist_cnn.Config(
        preset="strong", epochs=15, download=False, resume=True, publish="x", progress=False
    )
    line = _cli.command_line("mnist_cnn", config)
    # Fields that only steer the run are left out; the rest parse back to the same config.
    assert line == "zoo train mnist_cnn --no-download --epochs 15 --preset strong"
    again = _cli.parse("mnist_cnn", mnist_cnn.Config, shlex.split(line)[3:])
    assert again == mnist_cnn.Config(preset="strong", epochs=15, download=False)
    config = finetune.Config(budgets=(5, 0), modes=("scratch",))
    line = _cli.command_line("finetune", config)
    assert _cli.parse("finetune", finetune.Config, shlex.split(line)[3:]) == config


def test_missing_dataset_is_one_line_with_instructions(tmp_path, capsys, monkeypatch):
    from recipes import mnist_mlp

    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "nothing"))
    code = mnist_mlp.main(
        ["--dataset", "mnist", "--no-download", "--workdir", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert "train-images-idx3-ubyte.gz" in err and "--data-dir" in err
    assert not (tmp_path / "run").exists()


def test_workdir_holding_a_run_is_not_overwritten(tmp_path, capsys):
    from recipes import linear_regression

    (tmp_path / "metrics.jsonl").write_text('{"kind": "epoch"}\n')
    code = linear_regression.main(["--workdir", str(tmp_path)])
    assert code == 2
    _one_line_error(capsys, "already holds a run", "pass --resume")
    assert (tmp_path / "metrics.jsonl").read_text() == '{"kind": "epoch"}\n'


def test_resume_continues_a_finished_run_with_the_same_results(tmp_path, capsys):
    from recipes import linear_regression

    argv = ["--sgd-steps", "200", "--steps-per-dispatch", "100", "--no-progress"]
    workdir = str(tmp_path / "run")
    assert linear_regression.main([*argv, "--workdir", workdir]) == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    # A bare --resume, and a steering field changed: no warning, the same result.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = [*argv, "--workdir", workdir, "--resume", "--log-every", "10"]
        assert linear_regression.main(resumed) == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["sgd"] == first["sgd"] and again["gd"] == first["gd"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sgd_steps"] == 200 and config["resume"] is True


def test_non_finite_loss_is_one_line_exit_1(tmp_path, capsys):
    from recipes import linear_regression

    code = linear_regression.main(
        [
            "--learning-rate",
            "1e30",
            "--sgd-steps",
            "200",
            "--steps-per-dispatch",
            "100",
            "--no-progress",
            "--workdir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 1
    _one_line_error(capsys, "error: linear_regression: training loss is ", "Lower the learning")


def test_checkpoint_mismatch_is_one_line_exit_1(tmp_path, capsys):
    from recipes import ou_gru

    argv = ["--batches", "20", "--eval-every", "10", "--steps-per-dispatch", "10"]
    argv += ["--eval-sequences", "16", "--no-progress", "--workdir", str(tmp_path / "run")]
    assert ou_gru.main([*argv, "--hidden-size", "4"]) == 0
    capsys.readouterr()
    assert ou_gru.main([*argv, "--hidden-size", "5", "--batches", "30", "--resume"]) == 1
    _one_line_error(capsys, "error: ou_gru: checkpoint ", "does not match the train state")


def test_os_errors_during_a_run_are_one_line_exit_1(tmp_path, capsys, monkeypatch):
    import errno

    import zoo.train
    from recipes import linear_regression

    # A run folder that cannot be created (a file stands in its path).
    (tmp_path / "file").write_text("")
    code = linear_regression.main(["--workdir", str(tmp_path / "file" / "run")])
    assert code == 1
    _one_line_error(capsys, "error: linear_regression: ", str(tmp_path / "file"))
    # A full or read-only disk while training: what the operating system said, one line.
    for number, text in [
        (errno.ENOSPC, "No space left on device"),
        (errno.EACCES, "Permission denied"),
    ]:

        def fail(*args, **kwargs):
            raise OSError(number, text, str(tmp_path / "run" / "checkpoints"))

        monkeypatch.setattr(zoo.train, "fit", fail)
        code = linear_regression.main(["--workdir", str(tmp_path / f"run{number}")])
        assert code == 1
        _one_line_error(capsys, f"error: linear_regression: {text}: ")


def test_a_run_folder_in_use_by_another_run_is_one_line_exit_2(tmp_path, capsys):
    import subprocess
    import sys

    from recipes import linear_regression

    workdir = tmp_path / "run"
    hold = (
        "import sys, time, zoo.train as zt\n"
        f"with zt.lock_run_folder({str(workdir)!r}):\n"
        "    print('READY', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        argv = ["--sgd-steps", "100", "--no-progress", "--workdir", str(workdir)]
        for extra in ([], ["--resume"]):
            assert linear_regression.main([*argv, *extra]) == 2
            _one_line_error(capsys, f"error: {workdir} is in use", f"PID {proc.pid}")
        assert sorted(p.name for p in workdir.iterdir()) == [".lock"]
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_an_unwritable_zoo_home_runs_without_the_compilation_cache(tmp_path, capsys, monkeypatch):
    from recipes import linear_regression

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "file" / "zoo"))
    argv = ["--sgd-steps", "100", "--no-progress", "--workdir", str(tmp_path / "run")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert linear_regression.main(argv) == 0
    cache = [w for w in caught if "compilation cache" in str(w.message)]
    assert len(cache) == 1 and "cannot write to" in str(cache[0].message)
    assert "(compilation cache: off)" in capsys.readouterr().out
    assert (tmp_path / "run" / "results.json").exists()


def test_help_lists_every_config_field_with_its_comment(capsys):
    from recipes import ou_gru

    assert ou_gru.main(["--help"]) == 0
    out = capsys.readouterr().out
    for field in ("--hidden-size", "--batch-size", "--learning-rate", "--batches", "--workdir"):
        assert field in out
    assert "--resume, --no-resume" in out and "--coordinator" in out
    assert "time steps per sequence" in out  # the field's comment is its help
    assert os.environ.get("ZOO_HOME")  # the fixture's, not the user's


def test_python_dash_m_runs_a_recipe(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "recipes.ou_gru", "--epochs-x", "1"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=120,
    )
    assert result.returncode == 2 and "--epochs-x" in result.stderr


@needs_fashion
def test_train_examples_beyond_the_dataset_is_refused(tmp_path, capsys):
    from recipes import mnist_mlp

    workdir = tmp_path / "run"
    assert mnist_mlp.main(["--train-examples", "70000", "--workdir", str(workdir)]) == 2
    _one_line_error(capsys, "--train-examples 70000 exceeds the 60000 available")
    assert not workdir.exists()


def test_digits_look_like_fashion_mnist_images():
    from sklearn.datasets import load_digits

    from recipes import finetune

    pixels, _ = load_digits(return_X_y=True)
    digits = np.asarray(pixels)[:50].reshape(50, 8, 8)
    images = finetune.digits_like_fashion(digits)
    assert images.shape == (50, 28, 28) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    # Bilinear upsampling keeps each 8x8 image's mean brightness (on the 0..255 scale).
    np.testing.assert_allclose(
        images.reshape(50, -1).mean(1),
        digits.reshape(50, -1).mean(1) * 255 / 16,
        rtol=0.08,
    )


def test_label_budgets_are_stratified_and_nested():
    from recipes import finetune

    split = finetune.split_digits(0.3, seed=0)
    n_test = len(split["test_y"])
    assert n_test == pytest.approx(0.3 * 1797, abs=1)
    # Stratified: every class's share of the test split is its share of the whole set.
    counts = np.bincount(split["test_y"], minlength=10)
    whole = counts + np.bincount(split["train_y"], minlength=10)
    np.testing.assert_allclose(counts / n_test, whole / 1797, atol=0.01)
    ten = finetune.budget_indices(split["train_y"], 10, seed=0)
    fifty = finetune.budget_indices(split["train_y"], 50, seed=0)
    assert np.bincount(split["train_y"][ten]).tolist() == [10] * 10
    assert np.bincount(split["train_y"][fifty]).tolist() == [50] * 10
    assert set(ten) <= set(fifty)
    assert len(finetune.budget_indices(split["train_y"], 0, seed=0)) == len(split["train_y"])
    again = finetune.split_digits(0.3, seed=0)
    np.testing.assert_array_equal(again["test_x"], split["test_x"])


def test_finetune_recipe_runs_every_mode_and_writes_its_table(tmp_path):
    from recipes import finetune

    config = finetune.Config(
        budgets=(10,), steps=8, eval_every=4, batch_size=20, steps_per_dispatch=2, progress=False
    )
    results = finetune.train(config, str(tmp_path))
    assert [(r["mode"], r["per_class"], r["examples"]) for r in results] == [
        ("probe", 10, 100),
        ("finetune", 10, 100),
        ("scratch", 10, 100),
    ]
    for r in results:
        assert 0 <= r["test_accuracy"] <= 1 and r["steps"] == 8
        assert _records(tmp_path / f"{r['mode']}-10", "epoch")[-1]["step"] == 8
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"] == results and saved["test_examples"] == 540
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| mode | 10 per class |")
    assert f"| probe | {100 * results[0]['test_accuracy']:.2f}% (" in table
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def test_trackers_flag_writes_tensorboard_under_the_run_folder(tmp_path):
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    from recipes import ou_gru

    argv = ["--batches", "20", "--eval-every", "10", "--steps-per-dispatch", "10"]
    argv += ["--log-every", "5", "--eval-sequences", "16", "--no-progress"]
    argv += ["--trackers", "jsonl", "tensorboard", "--workdir", str(tmp_path)]
    assert ou_gru.main(argv) == 0
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    steps = [r["step"] for r in _records(tmp_path, "step")]
    assert [e.step for e in acc.Scalars("loss")] == steps == [5, 10, 15, 20]
    want = [r["test_mse"] for r in _records(tmp_path, "epoch")]
    np.testing.assert_allclose([e.value for e in acc.Scalars("test_mse")], want, rtol=1e-6)


def _signals_npz(path: Path) -> Path:
    # 1-D signals of 40 float samples, already standardised: the class is the sine's frequency.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    t = np.linspace(0, 1, 40)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.3 * rng.standard_normal((300, 40))
    x = ((x - x.mean()) / x.std()).astype(np.float32)
    np.savez(path, x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
    return path


@pytest.mark.parametrize("recipe", ["mnist_mlp", "mnist_cnn"])
def test_classifiers_train_on_a_users_npz_of_signals(tmp_path, recipe):
    import importlib

    import zoo

    module = importlib.import_module(f"recipes.{recipe}")
    data = _signals_npz(tmp_path / "signals.npz")
    config = module.Config(data=str(data), epochs=8, batch_size=20, progress=False)
    model, state, _ = module.train(config, str(tmp_path / "run"))
    epochs = _records(tmp_path / "run", "epoch")
    assert epochs[-1]["test_accuracy"] > 0.6  # 4 classes: chance is 0.25
    # Sized from the data (40 inputs, 4 classes), with the float inputs left unchanged.
    card = zoo.model_card(str(tmp_path / "run" / "model"))
    assert card.config["num_classes"] == 4 and card.dataset == "signals.npz"
    x_test = np.load(data)["x_test"][:3]
    assert card.preprocess is not None
    inputs = card.preprocess(x_test)
    np.testing.assert_array_equal(inputs.reshape(3, -1), x_test)


def test_a_bad_npz_is_one_line_exit_2(tmp_path, capsys):
    from recipes import mnist_mlp

    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3), np.float32))  # no labels
    workdir = tmp_path / "run"
    assert mnist_mlp.main(["--data", str(bad), "--workdir", str(workdir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data" in err and str(bad) in err
    assert not workdir.exists()
