"""Where pretrained weights live on disk, and how names find them."""

from pathlib import Path

from .. import _paths
from ._errors import WeightsNotFoundError
from ._registry import ModelSpec, check_tag, split_name

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.eqx"
CARD_FILE = "card.json"
GOLDEN_FILE = "golden.npz"

# Weights shipped inside the package (`zoo/hub/weights/<arch>.<tag>/`); pyproject ships
# `hub/weights/**/*` as package data.
BUNDLED_DIR = Path(__file__).parent / "weights"


def zoo_home() -> Path:
    """The hub's folder (`zoo._paths.zoo_home`): `$ZOO_HOME`, else `$XDG_CACHE_HOME/zoo`, else
    `~/.cache/zoo`. It holds `weights/` (weights published by your own runs) and
    `downloads/` (weights fetched from URLs, one folder per SHA-256).
    """
    return _paths.zoo_home()


def user_weights_dir() -> Path:
    """`$ZOO_HOME/weights`: publish a run here as `<arch>.<tag>/` to make it loadable by name."""
    return zoo_home() / "weights"


def download_dir() -> Path:
    """`$ZOO_HOME/downloads`: verified downloads, one folder per weights SHA-256."""
    return zoo_home() / "downloads"


def bundled_weights_dir() -> Path:
    """The package's own weights folder, `zoo/hub/weights/`."""
    return BUNDLED_DIR


def _roots() -> list[tuple[Path, str]]:
    return [(BUNDLED_DIR, "bundled"), (user_weights_dir(), "$ZOO_HOME/weights")]


def available_weights() -> dict[str, Path]:
    """Every `arch.tag` with weights on disk, mapped to its folder.

    Bundled weights come first: a folder of the same name under `$ZOO_HOME/weights` is
    shadowed by them (publish your runs under tags of their own).
    """
    found: dict[str, Path] = {}
    for root, _ in _roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            # Skip what is not a valid name (READMEs, temporary folders) rather than fail.
            try:
                arch, tag = split_name(folder.name)
            except ValueError:
                continue
            if tag is not None and (folder / CONFIG_FILE).is_file():
                found.setdefault(folder.name, folder)
    return found


def find_weights(spec: ModelSpec, tag: str | None) -> tuple[str, Path]:
    """The folder of `spec`'s weights `tag`, or of its default weights when `tag` is `None`.

    The default is `spec.default_tag` when those weights exist, else the only tag there is.

    **Returns:** `(name, folder)` with `name = "arch.tag"`.

    **Raises:** `WeightsNotFoundError` naming the folders searched and the tags available.
    """
    found = available_weights()
    prefix = spec.name + "."
    tags = sorted(n[len(prefix) :] for n in found if n.startswith(prefix))
    if tag is None:
        if spec.default_tag in tags:
            tag = spec.default_tag
        elif len(tags) == 1:
            tag = tags[0]
    else:
        check_tag(tag)
    if tag is not None and (name := f"{spec.name}.{tag}") in found:
        return name, found[name]

    where = ", ".join(f"{root}/ ({why})" for root, why in _roots())
    if tag is None and tags:
        what = f"{spec.name!r} has several weights and no default; name one of the tags"
    elif tag is None:
        what = f"no pretrained weights for {spec.name!r}"
    else:
        what = f"no weights {spec.name}.{tag}"
    listed = ", ".join(f"{spec.name}.{t}" for t in tags) or "none"
    raise WeightsNotFoundError(
        f"{what}: looked in {where}; available: {listed} (pass a URL with '#sha256=' or a "
        f"folder as a pathlib.Path for weights elsewhere)"
    )
