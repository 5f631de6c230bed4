"""What `pip install` puts into site-packages: zoo (recipes inside it as `zoo.recipes`), its
bundled weights, and no top-level package but `zoo`."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_of_the_tree_is_listed():
    in_tree = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "zoo").rglob("__init__.py")
    }
    in_tree |= {"zoo.recipes"}  # the top-level recipes/ folder, mapped into zoo's namespace
    assert set(_setuptools_config()["packages"]) == in_tree
    assert _setuptools_config()["package-dir"]["zoo.recipes"] == "recipes"


def test_wheel_installs_zoo_only(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("equinox_zoo-")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert top == {"zoo", dist_info}
    recipes = {Path(n).name for n in names if n.startswith("zoo/recipes/")}
    assert {p.name for p in (REPO / "recipes").glob("*.py")} <= recipes
    # Every file of every bundled weight set travels in the wheel.
    bundled = {str(p.relative_to(REPO)) for p in (REPO / "zoo").rglob("weights/*/*") if p.is_file()}
    assert bundled and bundled <= set(names)
