"""Where pretrained weights live on disk, and how names find them."""

from pathlib import Path

from .. import _paths
from ..models import (
    ModelSpec,
    check_tag,
    get_model_spec,
    registered_architectures,
    split_model_name as split_name,
)
from ._errors import PublishTagError, WeightsNotFoundError

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


def available_weights() -> dict[str, Path | str]:
    """Every `arch.tag` with weights, mapped to its folder (or, for a weight set published at
    a URL, to that URL).

    First the registered architectures' weight tables (bundled folders and URLs), then any
    other folder in the bundled folder, then `$ZOO_HOME/weights`: a folder of the same name
    under `$ZOO_HOME/weights` is shadowed by zoo's own (which is why publishing under a tag
    zoo uses is refused, see [`zoo.hub.check_publish_tag`][]).
    """
    found: dict[str, Path | str] = {}
    for arch in registered_architectures():
        for tag, entry in get_model_spec(arch).weights.items():
            name = f"{arch}.{tag}"
            if entry.url is not None:
                found[name] = entry.url
            elif (BUNDLED_DIR / name / CONFIG_FILE).is_file():
                found[name] = BUNDLED_DIR / name
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


def find_weights(spec: ModelSpec, tag: str | None) -> tuple[str, Path | str]:
    """Where `spec`'s weights `tag` are, or its default weights when `tag` is `None`.

    The default is `spec.default_tag` when those weights exist, else the only tag there is.

    **Returns:** `(name, location)` with `name = "arch.tag"` and `location` a folder, or the
    pinned URL of a weight set published elsewhere.

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
        f"{what}: looked in {where}; available: {listed} (pass a URL with '#sha256=' or the "
        f"path of a weights folder for weights elsewhere)"
    )


def check_publish_tag(arch: str, tag: str) -> str:
    """Refuse to publish `arch.tag` when zoo itself ships weights under that name.

    Weights found by name come from zoo's own weight sets first, so weights published under
    one of their names would be silently shadowed: `create_model("mlp_mnist.fashion",
    pretrained=True)` would keep returning the bundled ones. Recipes call this before they
    train, so that a run is not wasted.

    **Arguments:** `arch`, a registered architecture; `tag`, the tag to publish under.

    **Returns:** the name `"arch.tag"` to publish as.

    **Raises:** `PublishTagError` naming the weight set that holds the name and the tags zoo
    uses; `UnknownModelError` / `UnsafeNameError` for an unknown architecture or invalid tag.

    ```python
    import zoo

    zoo.hub.check_publish_tag("mlp_mnist", "my-run")   # fine: returns "mlp_mnist.my-run"
    try:
        zoo.hub.check_publish_tag("mlp_mnist", "fashion")
    except zoo.hub.PublishTagError as e:
        print(e)  # mlp_mnist.fashion is one of zoo's own weight sets ...
    ```
    """
    spec = get_model_spec(arch)
    check_tag(tag)
    name = f"{arch}.{tag}"
    taken = set(spec.weights)
    if BUNDLED_DIR.is_dir():
        taken |= {
            split_name(p.name)[1] or ""
            for p in BUNDLED_DIR.iterdir()
            if p.name.startswith(arch + ".") and (p / CONFIG_FILE).is_file()
        }
    if tag in taken:
        raise PublishTagError(
            f"{name} is one of zoo's own weight sets, which are found first by name, so "
            f"weights published as {name!r} would be shadowed by them; choose another tag "
            f"(zoo uses: {', '.join(sorted(taken))})"
        )
    return name
