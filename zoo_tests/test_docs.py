"""Every code block of the README and of the documentation site runs, and prints what the
page says it prints: no example can rot. (The set-up commands, marked skip, are what
`.ci/run` itself executes.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _markdown import REPO, Block, blocks, console_steps, setup_commands

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
TIMEOUT_S = 900


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The checkout's zoo, this interpreter's environment (its `zoo` command), no user state.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["ZOO_HOME"] = str(tmp_path / "zoo_home")
    env["MPLBACKEND"] = "Agg"
    env.pop("ZOO_TYPECHECK", None)
    return env


def _run(args: list[str], tmp_path: Path, where: str) -> str:
    done = subprocess.run(
        args,
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{where} failed (exit {done.returncode}):\n{output[-4000:]}"
    return output


def _runnable(page: Path, language: str) -> list[Block]:
    return [b for b in blocks(page) if b.language == language and b.skip is None]


def _ids(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p, "python")], ids=_ids)
def test_python_blocks_run(page: Path, tmp_path: Path):
    script = "".join(f"# --- {b.where}\n{b.code}\n" for b in _runnable(page, "python"))
    (tmp_path / "page.py").write_text(script)
    _run([sys.executable, "page.py"], tmp_path, f"the python blocks of {_ids(page)}")


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p, "bash")], ids=_ids)
def test_bash_blocks_run(page: Path, tmp_path: Path):
    for block in _runnable(page, "bash"):
        _run(["bash", "-e", "-c", block.code], tmp_path, block.where)


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p, "console")], ids=_ids)
def test_console_blocks_print_what_they_show(page: Path, tmp_path: Path):
    for block in _runnable(page, "console"):
        for command, expected in console_steps(block):
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=_env(tmp_path),
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
            printed = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
            missing = [line for line in expected if line not in printed]
            assert not missing, (
                f"{block.where}: `{command}` did not print {missing}; it printed:\n"
                + "\n".join(printed[-40:])
            )


def test_only_setup_commands_are_skipped_in_the_readme():
    skipped = [b for b in blocks(REPO / "README.md") if b.skip is not None]
    assert [b.language for b in skipped] == ["bash"], [b.where for b in skipped]
    assert setup_commands() == [
        line for line in skipped[0].code.splitlines() if line and not line.startswith("#")
    ]
    assert len(setup_commands()) == 2  # one runs the main job, one the tests
