"""Development sessions: `nox -s tests lint typecheck`, plus `recipes`, `bench` and `convert`."""

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, with runtime shape checking on (see pyproject's pytest addopts)."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", "-q", *(session.posargs or ["-n", "auto"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(".[test]", "pyright")
    session.run("pyright", "--pythonpath", session.virtualenv.location + "/bin/python")


@nox.session
def recipes(session: nox.Session) -> None:
    """Every recipe at full length, as the README's results table reports them."""
    session.install(".[recipes]")
    for name in ("mnist_mlp", "mnist_cnn", "ou_gru", "linear_regression", "finetune"):
        session.run("zoo", "train", name, "--workdir", f"runs/{name}", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def convert(session: nox.Session) -> None:
    """The converters against torchvision and timm themselves; with `ZOO_TEST_CONVERT=1` a
    missing library fails these tests instead of skipping them."""
    # Not the `test` extra: it pins the benchmarks' torch 2.13.0, which torchvision 0.29.1
    # cannot import beside.
    session.install(".[convert]", "pytest>=8", "pytest-xdist>=3.6")
    session.env["ZOO_TEST_CONVERT"] = "1"
    args = session.posargs or ["-n", "auto"]
    session.run("python", "-m", "pytest", "-q", "zoo_tests/test_convert.py", *args)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, strict: a broken link or API reference fails the build."""
    session.install(".[docs]")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)
