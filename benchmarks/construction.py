"""Cold construction time of every registered model: a fresh process per model and mode.

Run `python -m benchmarks.construction` (`--repeats N`, default 3; model names to time a
subset). Each measurement starts a new Python process that imports zoo (not timed), then
times `zoo.create_model(name)` up to the moment its arrays are ready: the initialiser's
compilation included, as a user meets it. Three modes per model: `none` (JAX's defaults:
no persistent compilation cache), `cold` (`zoo.train.enable_compilation_cache` on an empty
folder, what a recipe's first run meets) and `warm` (the same folder again, every later
run). Prints one JSON object: per model and mode, the median and every repeat, in seconds.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

MODES = ("none", "cold", "warm")

_CHILD = """
import sys, time, jax, zoo, zoo.train
name, cache = sys.argv[1], sys.argv[2]
if cache != "none":
    zoo.train.enable_compilation_cache(cache)
start = time.perf_counter()
model, state = zoo.create_model(name)
jax.block_until_ready(jax.tree.leaves((model, state)))
print(time.perf_counter() - start)
"""


def cold_seconds(name: str, cache: str = "none") -> float:
    """Seconds to build `name` in a fresh process; `cache`: a compilation-cache folder."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, name, cache], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def measure(names, repeats: int) -> dict[str, dict[str, dict]]:
    """`{name: {mode: {"median_s", "runs_s"}}}`, models interleaved within each repeat so
    that a change in the machine's load reaches every model alike."""
    runs = {name: {mode: [] for mode in MODES} for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name]["none"].append(cold_seconds(name))
            with tempfile.TemporaryDirectory() as cache:
                runs[name]["cold"].append(cold_seconds(name, cache))
                runs[name]["warm"].append(cold_seconds(name, cache))
    return {
        name: {
            mode: {"median_s": statistics.median(t), "runs_s": [round(x, 3) for x in t]}
            for mode, t in by_mode.items()
        }
        for name, by_mode in runs.items()
    }


def markdown(result: dict[str, dict[str, dict]]) -> list[str]:
    """The start-up table of model construction, one row per model."""
    lines = [
        "| model | no cache s | cold cache s | warm cache s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, by_mode in result.items():
        cells = " | ".join(f"{by_mode[mode]['median_s']:.2f}" for mode in MODES)
        lines.append(f"| `{name}` | {cells} |")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("names", nargs="*", help="models to time (default: all registered)")
    args = parser.parse_args(argv)
    import zoo

    result = measure(args.names or zoo.list_models(), args.repeats)
    print(json.dumps(result, indent=2))
    print("\n".join(markdown(result)))
    return result


if __name__ == "__main__":
    main()
