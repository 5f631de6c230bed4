"""The command line the small timing benchmarks share (`conv_parts`, `step_parts`)."""

import argparse
from collections.abc import Callable
from pathlib import Path


def timing_main(
    doc: str | None,
    measure: Callable[[int], dict],
    markdown: Callable[[dict, list[float]], str],
    repeats: int,
    argv: list[str] | None = None,
) -> dict:
    """Parse `--repeats` (default `repeats`), read the load average, run `measure(repeats)`
    and print `markdown(results, loadavg)`; the module docstring `doc` gives `--help` its
    first paragraph. **Returns:** the results."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=repeats, help="rounds per measurement")
    args = parser.parse_args(argv)
    # The load average at the start heads the table: timings on a busy machine mislead.
    loadavg = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    results = measure(args.repeats)
    print(markdown(results, loadavg))
    return results
