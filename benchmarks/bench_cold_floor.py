"""How much of the cold-run target (issue 21: ``amplint check --no-cache`` on torch's tree
no slower than ``ruff check --select E,F``) the parsing alone uses.

amplint records, in one process, every text it hands to libcst (whole modules, slices,
pieces of large files) and every source it hands to CPython's ``ast``. Two floors then do
only that work, with two worker processes as amplint's cold run has, each reading its
share of every file of the tree:

- ``libcst``: import libcst in each worker and parse the recorded texts (the analyser
  DESIGN.md fixes; what it parses is already cut down to what the rules can see);
- ``libcst + ast``: the same, plus the ``ast`` parses of the prefilter's second stage.

Each is measured interleaved with ruff E,F and amplint's cold run. A floor's ratio to ruff
says how much of ruff's time is left for everything else amplint does (the byte gate, the
readmission through imports, the analysis, the rules, the process pool).

    python benchmarks/bench_cold_floor.py            # torch's installed tree, 5 rounds
    python benchmarks/bench_cold_floor.py --rounds 9
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import pickle
import statistics
import sys
import tempfile
from pathlib import Path

from bench_lint import BIN, copy_python_files, make_project, measure, torch_tree

WORKERS = 2
#: What the recording run wrote: the libcst texts and the ``ast`` sources, in call order.
RECORDING = "parses.pickle"


def record_parses(tree: Path, target: Path) -> tuple[int, int]:
    """Run amplint's cold check over ``tree`` in this process and keep what it parsed."""
    import amplint.engine.cstparse as cstparse
    import amplint.engine.piecewise as piecewise
    import amplint.engine.source as source
    from amplint import api
    from amplint.config import load_settings

    texts: list[str] = []
    sources: list[str | bytes] = []
    parse_module, parse_ast = cstparse.parse_module, ast.parse

    def recorded_module(text: str | bytes):  # type: ignore[no-untyped-def]
        texts.append(text if isinstance(text, str) else text.decode("utf-8", "surrogateescape"))
        return parse_module(text)

    def recorded_ast(text, *args, **kwargs):  # type: ignore[no-untyped-def]
        sources.append(text)
        return parse_ast(text, *args, **kwargs)

    # The modules that took libcst's entry point by name, and ``ast`` for every caller.
    for module in (cstparse, piecewise, source):
        if getattr(module, "parse_module", None) is parse_module:
            module.parse_module = recorded_module  # type: ignore[attr-defined]
    ast.parse = recorded_ast  # type: ignore[assignment]
    try:
        settings = load_settings(None, tree)
        # As the command line's default (concise) output runs it: fixes named, not made.
        api.check_paths(
            [tree], settings, api.Selection(), use_cache=False, jobs=1, with_edits=False
        )
    finally:
        ast.parse = parse_ast  # type: ignore[assignment]
    with open(target, "wb") as stream:
        pickle.dump((texts, sources), stream)
    return len(texts), len(sources)


def _shares(items: list, count: int) -> list[list]:  # type: ignore[type-arg]
    """``items`` in ``count`` lists of about equal total size, largest first."""
    shares: list[list] = [[] for _ in range(count)]  # type: ignore[type-arg]
    loads = [0] * count
    for item in sorted(items, key=len, reverse=True):
        lightest = loads.index(min(loads))
        shares[lightest].append(item)
        loads[lightest] += len(item)
    return shares


def _floor_worker(job: tuple[list[str], list[str], list[str | bytes]]) -> None:
    files, texts, sources = job
    for path in files:
        with open(path, "rb") as stream:
            stream.read()
    if texts:
        import libcst

        for text in texts:
            libcst.parse_module(text)
    for text in sources:
        ast.parse(text)


def run_floor(work: Path, with_ast: bool) -> None:
    """One floor run (a subprocess of the benchmark): read, and parse what was recorded."""
    with open(work / RECORDING, "rb") as stream:
        texts, sources = pickle.load(stream)
    files = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(work / "tree")
        for name in names
        if name.endswith(".py")
    )
    text_shares = _shares(texts, WORKERS)
    source_shares = _shares(sources if with_ast else [], WORKERS)
    jobs = [(files[i::WORKERS], text_shares[i], source_shares[i]) for i in range(WORKERS)]
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        pool.map(_floor_worker, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--floor", choices=("libcst", "libcst+ast"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        run_floor(args.work, with_ast=args.floor == "libcst+ast")
        return

    work = Path(tempfile.mkdtemp(prefix="amplint-floor-"))
    files, lines = copy_python_files(torch_tree(), work / "tree")
    make_project(work)
    parses, sources = record_parses(work / "tree", work / RECORDING)
    print(f"tree: {files} files, {lines:,} lines; amplint parsed {parses} texts with libcst")
    print(f"and {sources} with ast; {args.rounds} rounds, interleaved")
    floor = [sys.executable, __file__, "--work", str(work), "--floor"]
    ruff = [str(BIN / "ruff"), "check", "--no-cache", "--exit-zero", "--quiet"]
    commands = {
        "libcst": [*floor, "libcst"],
        "libcst + ast": [*floor, "libcst+ast"],
        "ruff E,F": [*ruff, "--select", "E,F", "tree"],
        "amplint cold": [str(BIN / "amplint"), "check", "--no-cache", "--exit-zero", "tree"],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            walls[name].append(measure(command, work)[0])
    peer = statistics.median(walls["ruff E,F"])
    print(f"\n{'command':<16} {'median s':>9} {'min':>6} {'max':>6} {'/ ruff E,F':>11}")
    for name, values in walls.items():
        median = statistics.median(values)
        print(
            f"{name:<16} {median:>9.2f} {min(values):>6.2f} {max(values):>6.2f}"
            f" {median / peer:>11.2f}"
        )
    rounds = [w / r for w, r in zip(walls["libcst"], walls["ruff E,F"], strict=True)]
    print(f"\nlibcst floor / ruff E,F, round by round: {', '.join(f'{r:.2f}' for r in rounds)}")


if __name__ == "__main__":
    main()
