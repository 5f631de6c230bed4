"""What recipes share before and after a run: the config checks (recipes._config) and the
atomic writers of results and figures (recipes._common)."""

import dataclasses
import json
import stat

import numpy as np
import pytest


@pytest.mark.parametrize("value", ["no", "False", 0, 1, None])
def test_bool_fields_refuse_non_bools(value):
    """`Config(download="no")` used to be read as True by every `if config.download:`."""
    from recipes import _config, mnist_mlp

    config = dataclasses.replace(mnist_mlp.Config(), download=value)
    with pytest.raises(_config.ConfigError, match=r"--download expects True or False; got"):
        _config.validate("mnist_mlp", config)


def test_bool_fields_accept_bools():
    from recipes import _config, mnist_mlp

    for value in (True, False, np.bool_(True)):
        _config.validate("mnist_mlp", dataclasses.replace(mnist_mlp.Config(), download=value))
    # Steering bools (inherited from BaseConfig) are checked too.
    with pytest.raises(_config.ConfigError, match="--resume expects True or False"):
        _config.validate("mnist_mlp", dataclasses.replace(mnist_mlp.Config(), resume="yes"))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_json_is_atomic_and_readable(tmp_path):
    from recipes._common import write_json

    path = tmp_path / "results.json"
    write_json(path, {"b": 1, "a": [1.5]})
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
    # Like every other file zoo writes (zoo._atomic): readable by others, not mkstemp's 0600.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    with pytest.raises(TypeError):
        write_json(path, {"x": object()})  # not serialisable: nothing is written
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
    assert _leftovers(tmp_path) == []


def test_failed_figure_leaves_no_temporary_file(tmp_path):
    import matplotlib.pyplot as plt

    from recipes._common import save_figure

    path = tmp_path / "training.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, path)
    good = path.read_bytes()
    assert good.startswith(b"\x89PNG")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    class Boom(RuntimeError):
        pass

    fig, ax = plt.subplots()

    def fail(*args, **kwargs):
        raise Boom("disk full")

    fig.savefig = fail  # the write fails after the temporary file exists
    with pytest.raises(Boom):
        save_figure(fig, path)
    assert path.read_bytes() == good  # the old figure is untouched
    assert _leftovers(tmp_path) == []
    assert not plt.fignum_exists(fig.number)  # closed all the same
