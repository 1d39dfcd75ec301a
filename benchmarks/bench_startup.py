"""How much of the one-file and warm-run budgets (issue 21) is left to amplint once the
interpreter and the analyser (libcst, DESIGN.md) have started, measured as subprocesses in
the same run as amplint and ruff, interleaved round by round.

Each floor is a command that does strictly less than amplint must do for that target, in
this environment (``site`` included, as amplint's console script runs with it):

- a clean file: start the interpreter, read a TOML file's parser in (the configuration) and
  parse the file with ``ast`` (a file named on the command line gets its syntax checked);
- a training loop: start the interpreter and import libcst (the file is parsed with it);
- a warm re-run: start the interpreter, walk the tree and ``stat`` every ``.py`` file (the
  least a cache needs to learn that nothing changed), reading no cache at all.

The console script parses ``amplint check [FLAGS] FILES`` without click (amplint.launch):
``import click`` is measured too, to show what that saves. A floor above its target means
the target cannot be met on this machine, whatever amplint's own code does.

    python benchmarks/bench_startup.py                 # torch's installed tree, 15 rounds
    python benchmarks/bench_startup.py --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import click
from bench_lint import (
    BIN,
    CLEAN_FILE,
    CLEAN_FILE_TARGET,
    LOOP_FILE,
    LOOP_FILE_TARGET,
    WARM_TARGET,
    copy_python_files,
    make_project,
    measure,
    torch_tree,
)

PYTHON = str(BIN / "python")
#: Floors run without ``site`` (``-S``), their packages found by a plain path entry: this
#: environment's ``.pth`` files (a development install's import finder) are left out, so a
#: floor is lower than what any installation of amplint could start with.
NO_SITE = "import sys; sys.path.append({path!r})\n"

#: What a warm run cannot skip: every candidate file is found and its metadata read.
WALK_AND_STAT = (
    "import os\n"
    "for folder, _, names in os.walk('tree'):\n"
    "    for name in names:\n"
    "        if name.endswith('.py'): os.stat(os.path.join(folder, name))\n"
)


#: What a clean file cannot skip: the configuration's parser and the named file's syntax.
CLEAN_FLOOR = "import ast, tomllib\nast.parse(open({file!r}, 'rb').read())\n"


@dataclass
class Command:
    name: str
    argv: list[str]
    walls: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.walls) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="amplint-startup-"))
    files, lines = copy_python_files(torch_tree(), work / "tree")
    make_project(work)
    clean = str(work / "tree" / CLEAN_FILE)
    loop = str(LOOP_FILE)
    amplint = [str(BIN / "amplint"), "check", "--exit-zero"]
    ruff = [str(BIN / "ruff"), "check", "--no-cache", "--exit-zero", "--quiet", "--select", "E,F"]
    no_site = NO_SITE.format(path=str(Path(click.__file__).parent.parent))
    commands = {
        "bare": Command("python -S -c pass (no site)", [PYTHON, "-S", "-c", "pass"]),
        "python": Command("python -c pass", [PYTHON, "-c", "pass"]),
        "click": Command("no site: import click", [PYTHON, "-S", "-c", no_site + "import click"]),
        "clean floor": Command(
            "floor: tomllib + ast.parse the file",
            [PYTHON, "-c", CLEAN_FLOOR.format(file=clean)],
        ),
        "libcst": Command("floor: import libcst", [PYTHON, "-c", "import libcst"]),
        "walk": Command("floor: walk + stat the tree", [PYTHON, "-c", WALK_AND_STAT]),
        "command": Command(
            "python -c 'import amplint.command'", [PYTHON, "-c", "import amplint.command"]
        ),
        "amplint clean": Command(
            f"amplint check --no-cache {CLEAN_FILE.name}", [*amplint, "--no-cache", clean]
        ),
        "amplint loop": Command(
            f"amplint check --no-cache {LOOP_FILE.name}", [*amplint, "--no-cache", loop]
        ),
        "amplint warm": Command("amplint check tree (warm cache)", [*amplint, "tree"]),
        "ruff clean": Command(f"ruff E,F {CLEAN_FILE.name}", [*ruff, clean]),
        "ruff loop": Command(f"ruff E,F {LOOP_FILE.name}", [*ruff, loop]),
    }
    print(f"tree: {files} files, {lines:,} lines; {args.rounds} rounds, interleaved")
    for command in commands.values():  # warm-up: bytecode, page cache, amplint's cache filled
        measure(command.argv, work)
    for round_number in range(1, args.rounds + 1):
        for command in commands.values():
            command.walls.append(measure(command.argv, work)[0])
        print(f"round {round_number}/{args.rounds} done", file=sys.stderr)

    print(f"\n{'command':<46} {'median ms':>9} {'min':>6} {'max':>6}")
    for command in commands.values():
        walls = [wall * 1000 for wall in command.walls]
        print(f"{command.name:<46} {command.median_ms:>9.0f} {min(walls):>6.0f} {max(walls):>6.0f}")

    ms = {key: command.median_ms for key, command in commands.items()}
    print(f"\nsite (this environment's .pth files): {ms['python'] - ms['bare']:.0f} ms")
    skipped = ms["click"] - ms["bare"]
    print(f"import click (no site), which the console script skips: {skipped:.0f} ms")
    print("\ntarget         target ms  floor ms  floor/target  amplint ms  amplint/target  ruff ms")
    for label, target, floor, ours, peer in (
        ("clean file", CLEAN_FILE_TARGET, "clean floor", "amplint clean", "ruff clean"),
        ("training loop", LOOP_FILE_TARGET, "libcst", "amplint loop", "ruff loop"),
        ("warm re-run", WARM_TARGET, "walk", "amplint warm", None),
    ):
        peer_ms = f"{ms[peer]:>8.0f}" if peer else f"{'':>8}"
        share = ms[floor] / (target * 1000)
        print(
            f"{label:<14} {target * 1000:>9.0f} {ms[floor]:>9.0f} {share:>13.2f}"
            f" {ms[ours]:>11.0f} {ms[ours] / (target * 1000):>15.2f} {peer_ms}"
        )
    # Each round's too: a floor above its target in most rounds is not a noisy median.
    for label, target, floor, ours in (
        ("clean file", CLEAN_FILE_TARGET, "clean floor", "amplint clean"),
        ("training loop", LOOP_FILE_TARGET, "libcst", "amplint loop"),
        ("warm re-run", WARM_TARGET, "walk", "amplint warm"),
    ):
        above = sum(wall > target for wall in commands[floor].walls)
        over = sum(wall > target for wall in commands[ours].walls)
        print(
            f"  {label}: floor above the target in {above} of {args.rounds} rounds,"
            f" amplint in {over}"
        )


if __name__ == "__main__":
    main()
