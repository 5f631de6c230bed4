"""Cold construction time of every registered model: a fresh process per model.

Run `python -m benchmarks.construction` (`--repeats N`, default 3). Each measurement starts a
new Python process that imports zoo (not timed), then times `zoo.create_model(name)` up to
the moment its arrays are ready: the initialisers' compilation included, as a user meets it.
Prints one JSON object: the median and every repeat per model, in seconds.
"""

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = """
import time, jax, zoo
name = {name!r}
start = time.perf_counter()
model, state = zoo.create_model(name)
jax.block_until_ready(jax.tree.leaves((model, state)))
print(time.perf_counter() - start)
"""


def cold_seconds(name: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(name=name)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("names", nargs="*", help="models to time (default: all registered)")
    args = parser.parse_args(argv)
    import zoo

    names = args.names or zoo.list_models()
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:  # interleaved, so that a change in load reaches every model
            runs[name].append(cold_seconds(name))
    result = {
        name: {"median_s": statistics.median(t), "runs_s": [round(x, 3) for x in t]}
        for name, t in runs.items()
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
