"""Linter speed on a real tree: amplint (cold and warm cache) against ruff and TorchFix.

Every tool runs as a subprocess on the same copy of the tree, interleaved round by round,
so machine noise hits them alike. Wall time is the median over rounds; peak memory is the
largest resident set of the process and the children it waited for (``wait4``).

    python benchmarks/bench_lint.py                       # the installed torch package
    python benchmarks/bench_lint.py --tree src/ --rounds 5
    python benchmarks/bench_lint.py --skip-torchfix

TorchFix pins an older libcst than amplint, so it runs from its own virtual environment
(created on first use under ``~/.cache/amplint-bench``); being slow, it runs on a subset of
the tree, and its full-tree time is extrapolated by line count (printed as such).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
TORCHFIX_ENV = Path.home() / ".cache" / "amplint-bench" / "torchfix-venv"


@dataclass
class Tool:
    name: str
    command: list[str]
    #: how many of the tree's lines the command covers (TorchFix runs on a subset).
    share: float = 1.0
    prepare: list[str] | None = None
    walls: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)


def measure(command: list[str], cwd: Path) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (KiB) and exit status of one run."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {error.strip()[:400]}")
    return wall, usage.ru_maxrss, process.returncode


def copy_python_files(source: Path, target: Path) -> tuple[int, int]:
    files = lines = 0
    for path in source.rglob("*.py"):
        if not path.is_file():
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        files += 1
        lines += path.read_bytes().count(b"\n")
    return files, lines


def torch_tree() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise SystemExit("torch is not installed: pass --tree")
    return Path(spec.origin).parent


def torchfix_binary() -> Path | None:
    binary = TORCHFIX_ENV / "bin" / "torchfix"
    if binary.exists():
        return binary
    print("creating a virtual environment for TorchFix (first run only)...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(TORCHFIX_ENV)], check=True)
        subprocess.run(
            [str(TORCHFIX_ENV / "bin" / "pip"), "install", "-q", "torchfix==0.7.0"], check=True
        )
    except subprocess.CalledProcessError:
        print("TorchFix could not be installed; skipping it", file=sys.stderr)
        return None
    return binary


def subset(tree: Path, target: Path, budget_lines: int) -> int:
    """Copy files (in a stable order) until ``budget_lines``; returns the lines copied."""
    copied = 0
    for path in sorted(tree.rglob("*.py")):
        if copied >= budget_lines:
            break
        destination = target / path.relative_to(tree)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        copied += path.read_bytes().count(b"\n")
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="directory to lint (default: installed torch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-torchfix", action="store_true")
    parser.add_argument("--torchfix-lines", type=int, default=60_000, help="TorchFix subset size")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="amplint-bench-"))
    tree = work / "tree"
    files, lines = copy_python_files(args.tree or torch_tree(), tree)
    print(f"tree: {files} files, {lines:,} lines (copied to {tree})")

    amplint = [str(BIN / "amplint"), "check", "--exit-zero", "tree"]
    ruff = [str(BIN / "ruff"), "check", "--no-cache", "--exit-zero", "--quiet"]
    tools = [
        Tool("amplint cold (--no-cache)", [*amplint[:2], "--no-cache", *amplint[2:]]),
        Tool("amplint warm (cache, unchanged)", amplint, prepare=amplint),
        Tool("ruff --select E,F", [*ruff, "--select", "E,F", "tree"]),
        Tool("ruff --select ALL", [*ruff, "--select", "ALL", "tree"]),
    ]
    if not args.skip_torchfix and (binary := torchfix_binary()) is not None:
        covered = subset(tree, work / "torchfix-subset", args.torchfix_lines)
        tools.append(
            Tool(
                f"TorchFix --select ALL ({covered:,} lines)",
                [str(binary), "--select", "ALL", "torchfix-subset"],
                share=covered / lines,
            )
        )

    for round_number in range(1, args.rounds + 1):
        for tool in tools:
            if tool.prepare:
                measure(tool.prepare, work)
            wall, peak, _ = measure(tool.command, work)
            tool.walls.append(wall)
            tool.peaks.append(peak)
        print(f"round {round_number}/{args.rounds} done", file=sys.stderr)

    medians = {tool.name: statistics.median(tool.walls) / tool.share for tool in tools}
    print(f"\n{'tool':<42} {'wall s':>9} {'peak MB':>9}")
    for tool in tools:
        note = "  (extrapolated to the whole tree)" if tool.share < 1 else ""
        print(f"{tool.name:<42} {medians[tool.name]:>9.2f} {max(tool.peaks) / 1024:>9.0f}{note}")

    cold = medians[tools[0].name]
    warm = medians[tools[1].name]
    print("\nratios (amplint cold / peer; < 1 means amplint is faster):")
    for tool in tools[2:]:
        print(f"  cold / {tool.name:<40} {cold / medians[tool.name]:8.3f}")
    if len(tools) > 4:
        print(f"  TorchFix / amplint cold: {medians[tools[4].name] / cold:.0f}x")
    print(f"  warm re-run: {warm:.3f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
