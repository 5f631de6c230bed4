"""The `zoo` command: list, describe, summarise, train and evaluate the zoo's models.

    zoo list [PATTERN] [--pretrained]
    zoo info NAME [--json]
    zoo summary NAME [--pretrained]
    zoo train RECIPE [--field value ...] [--resume] [--help]
    zoo eval NAME --dataset fashion-mnist [--data-dir DIR]
    zoo --version

NAME is `arch` or `arch.tag`, a weights folder (any argument with a `/`, or starting with `.`
or `~`), or a URL pinned with `#sha256=`. Errors are one line on stderr with exit status 1
(2 for a usage error or an unknown recipe). Text that comes from a model card is printed with
its control characters escaped, so a downloaded card cannot drive the terminal.
"""

import argparse
import importlib
import json
import math
import os
import pkgutil
import sys
import types
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import hub
from ._version import DISTRIBUTION, __version__
from .models import get_model_spec as get_spec, split_model_name as split_name

_DATASETS = ("fashion-mnist", "mnist")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _safe(text: str) -> str:
    """`text` with control and format characters (ESC, carriage returns, bidirectional
    overrides) escaped, newlines kept: card text and error messages quote what a server sent,
    and a terminal would obey it (fake an "OK" line, set the window title)."""
    return "".join(
        ch
        if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _print(text: str, *, file=None) -> None:
    print(_safe(text), file=file)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0.0 <= value <= 1.0) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"must be a fraction between 0 and 1 (0.001 is 0.1 points), got {text!r}"
        )
    return value


def _source(text: str) -> str | Path:
    """A command-line NAME: a URL or a name stays a `str`, anything path-like is a folder."""
    if "://" in text:
        return text
    if "/" in text or os.sep in text or text.startswith((".", "~")):
        return Path(text).expanduser()
    return text


# ----------------------------------------------------------------------------------------------
# Subcommands.


def _list(args: argparse.Namespace) -> int:
    names = hub.list_models(args.pattern, pretrained=args.pretrained)
    if not names:
        kind = "pretrained weights" if args.pretrained else "architectures"
        print(f"no {kind} match {args.pattern!r}", file=sys.stderr)
        return 0
    width = max(len(n) for n in names)
    failed = 0
    for name in names:
        if args.pretrained:
            try:
                card = hub.model_card(name)
            except (ValueError, OSError) as e:
                # One bad folder must not hide the others: report it on its own line.
                _print(f"zoo list: error: {name}: {_one_line(e)}", file=sys.stderr)
                failed += 1
                continue
            acc = card.metrics.get("test_accuracy")
            about = (card.dataset or "").replace("\n", "\\n")
            if isinstance(acc, int | float) and not isinstance(acc, bool):
                about += f"  test accuracy {100 * acc:.2f}%"
        else:
            about = get_spec(name).description
        _print(f"{name.ljust(width)}  {about}".rstrip())
    return 1 if failed else 0


def _info(args: argparse.Namespace) -> int:
    card = hub.model_card(_source(args.name))
    if args.json:
        print(json.dumps(card.to_json(), indent=2, sort_keys=True))  # escapes control chars
    else:
        _print(card.format())
    return 0


def _summary(args: argparse.Namespace) -> int:
    from ._summary import summary

    source = _source(args.name)
    if isinstance(source, Path) or "://" in source:
        model, state = hub.load_pretrained(source)
    else:
        tag = split_name(source)[1]
        model, state = hub.create_model(source, pretrained=args.pretrained or tag is not None)
    print(summary(model, state))  # an empty state adds no rows
    return 0


def _recipes_package() -> types.ModuleType | None:
    """The recipes: `zoo.recipes` where zoo is installed, the checkout's `recipes/` otherwise
    (a source tree on `sys.path` shadows the installed `zoo`, and its `zoo/` has no recipes)."""
    for name in ("zoo.recipes", "recipes"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    return None


def _known_recipes() -> list[str]:
    package = _recipes_package()
    if package is None:
        return []
    return sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")
    )


def _train(args: argparse.Namespace) -> int:
    known = _known_recipes()
    if args.recipe not in known:
        listed = ", ".join(known) or "none (the `recipes` package is not installed)"
        print(
            f"zoo train: error: unknown recipe {args.recipe!r}; known recipes: {listed}",
            file=sys.stderr,
        )
        return 2
    package = _recipes_package()
    assert package is not None  # `known` is empty without it
    module = importlib.import_module(f"{package.__name__}.{args.recipe}")
    return int(module.main(list(args.args)) or 0)


def _eval(args: argparse.Namespace) -> int:
    from . import data, train

    source = _source(args.name)
    card = hub.model_card(source)
    if card.preprocess is None:
        raise ValueError(
            f"the card of {source} records no `preprocess`, so zoo cannot tell how to "
            f"feed it images"
        )
    model, state = hub.load_pretrained(source)
    images, labels, _ = data.load(
        args.dataset, "test", data_dir=args.data_dir, download=not args.no_download
    )
    # The engine's own evaluation, so that this number is computed as the recipe's was.
    metrics = train.evaluate(
        train.classification_metrics(),
        model,
        state,
        {"image": card.preprocess(images), "label": labels},
        batch_size=args.batch_size,
    )
    accuracy = metrics["accuracy"]
    n = len(labels)
    _print(f"{card.name}: test accuracy {100 * accuracy:.2f}% on {args.dataset} ({n:,} images)")
    reference = card.metrics.get("test_accuracy")
    if (
        card.dataset != args.dataset
        or not isinstance(reference, int | float)
        or isinstance(reference, bool)
    ):
        return 0
    diff = accuracy - float(reference)
    _print(f"card: {100 * reference:.2f}% (difference {100 * diff:+.2f} points)")
    if abs(diff) > args.tolerance:
        print(
            f"zoo eval: error: the accuracy differs from the card's by more than "
            f"{100 * args.tolerance:g} points",
            file=sys.stderr,
        )
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# The parser.

_NAME_HELP = (
    "'arch' (its default weights) or 'arch.tag'; a weights folder (a path with '/', or "
    "starting with '.' or '~'); or a URL ending in '#sha256=<hex>', the SHA-256 of the "
    "folder's card.json"
)


def build_parser() -> argparse.ArgumentParser:
    """**Returns:** the `zoo` command's argument parser."""
    parser = _Parser(
        prog="zoo",
        description="The Equinox model zoo: registered architectures, pretrained weights "
        "with model cards, and the recipes that train them.",
        epilog="Weights are looked up bundled in the package, then in $ZOO_HOME/weights "
        "($ZOO_HOME defaults to ~/.cache/zoo); ZOO_OFFLINE=1 forbids downloads; "
        "ZOO_DOWNLOAD_DEADLINE (seconds per file, default 600) bounds them. Run "
        "'zoo COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{DISTRIBUTION} {__version__}",
        help="print the distribution's name and version, then exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "list",
        help="list architectures, or pretrained weights",
        description="List the registered architectures (with --pretrained: the weights "
        "available locally, as arch.tag), sorted.",
    )
    p.add_argument(
        "pattern",
        nargs="?",
        default="*",
        metavar="PATTERN",
        help="shell-style pattern matched against the whole name, e.g. 'cnn*' (default: '*')",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="list weights (arch.tag) with their dataset and accuracy instead of architectures",
    )
    p.set_defaults(func=_list)

    p = commands.add_parser(
        "info",
        help="show the model card of a set of weights",
        description="Print the model card: architecture config, parameters, dataset, metrics, "
        "the recipe command and config, checksum, versions and date.",
    )
    p.add_argument("name", metavar="NAME", help=_NAME_HELP)
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=_info)

    p = commands.add_parser(
        "summary",
        help="show a model's parameter table",
        description="Print every parameter of the model (path, shape, dtype, size, mean, std) "
        "and the totals. A bare architecture name is freshly initialised (key 0) unless "
        "--pretrained is given; a tag, folder or URL loads its weights.",
    )
    p.add_argument("name", metavar="NAME", help=_NAME_HELP)
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="for a bare architecture name, load its default weights",
    )
    p.set_defaults(func=_summary)

    known = ", ".join(_known_recipes()) or "none installed"
    p = commands.add_parser(
        "train",
        help="run a recipe",
        description="Run a recipe: the same as 'python -m recipes.RECIPE [ARGS ...]'.",
        epilog=f"Recipes: {known}. 'zoo train RECIPE --help' lists the recipe's fields; "
        "booleans are flags ('--resume', '--no-progress'), lists take several values "
        "('--trackers jsonl tensorboard').",
    )
    p.add_argument("recipe", metavar="RECIPE", help="the recipe to run")
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="ARGS",
        help="the recipe's options, e.g. '--epochs 5 --dataset fashion-mnist --resume'",
    )
    p.set_defaults(func=_train)

    p = commands.add_parser(
        "eval",
        help="measure a pretrained model's test accuracy",
        description="Evaluate pretrained weights on a dataset's test split, preprocessing the "
        "images as the card records, and compare with the card's test accuracy when the "
        "card is for the same dataset (exit status 1 if they differ by more than the "
        "tolerance).",
    )
    p.add_argument("name", metavar="NAME", help=_NAME_HELP)
    p.add_argument(
        "--dataset", required=True, choices=_DATASETS, help="the dataset whose test split to use"
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="a folder holding DATASET/ with the IDX files, searched first (default: "
        "$ZOO_DATA, the cache, then an operating-system copy)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="fail rather than download a missing dataset"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="examples per compiled call (default: 1000)",
    )
    p.add_argument(
        "--tolerance",
        type=_fraction,
        default=0.001,
        metavar="T",
        help="largest accepted difference from the card's accuracy, as a fraction "
        "(default: 0.001, i.e. 0.1 points)",
    )
    p.set_defaults(func=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `zoo` command.

    **Arguments:** `argv`, the arguments after `zoo` (default: `sys.argv[1:]`).

    **Returns:** the exit status: 0 on success, 1 for an error, 2 for a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else 1
    if args.command == "train":
        # A recipe reports its own errors; anything else it raises is a bug worth a traceback.
        return args.func(args)
    try:
        with warnings.catch_warnings():
            # One line per warning (a damaged download removed and fetched again), not two.
            warnings.showwarning = _show_warning
            return args.func(args)
    except (ValueError, LookupError, OSError) as e:
        # The hub's and the data loader's errors name the problem; a traceback adds nothing.
        _print(f"zoo {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _one_line(error: BaseException) -> str:
    return str(error).replace("\n", " ")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _print(
        f"zoo: warning: {_one_line(message) if isinstance(message, Warning) else message}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    raise SystemExit(main())
