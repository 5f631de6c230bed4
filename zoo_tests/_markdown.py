"""Code blocks of the README and the documentation pages, as the tests execute them.

A fenced block's language says how it runs: `python` blocks of one page run in order as one
script (later blocks use earlier names), `console` blocks are `$ command` lines followed by
the output they must print, `bash` blocks run as one `bash -e` script. The line just before a
block may say `<!-- test: skip REASON -->` (a command that cannot run here, e.g. under SLURM,
or the set-up commands that CI runs itself); every other block is executed.
"""

import dataclasses
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"<!--\s*test:\s*skip\s+(.+?)\s*-->")


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None  # the reason, for a block marked skip

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: code block never closed")
        previous = lines[start - 1] if start > 0 else ""
        skip = _SKIP.search(previous)
        found.append(
            Block(
                path,
                start + 1,
                opening.group(1),
                "\n".join(body) + "\n",
                skip.group(1) if skip else None,
            )
        )
        i += 1
    return found


def console_steps(block: Block) -> list[tuple[str, list[str]]]:
    """`(command, expected output lines)` for each `$ ` line of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line.rstrip())
    if not steps:
        raise ValueError(f"{block.where}: a console block needs `$ command` lines")
    return steps


def setup_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The README's set-up commands: the non-comment lines of its first `bash` block."""
    first = next(b for b in blocks(readme) if b.language == "bash")
    return [line for line in first.code.splitlines() if line.strip() and not line.startswith("#")]


if __name__ == "__main__":  # `.ci/run` runs the README's set-up commands exactly as written
    print("\n".join(setup_commands()))
