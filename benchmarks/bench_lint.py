"""Linter speed on a real tree: amplint (cold and warm cache) against ruff and TorchFix,
and on one file at a time, as pre-commit and editors run it.

Every tool runs as a subprocess on the same copy of the tree, interleaved round by round,
so machine noise hits them alike. Wall time is the median over rounds; peak memory is the
largest resident set of the process and the children it waited for (``wait4``). The spread
(slowest / fastest round) and the cold / ``ruff --select E,F`` ratio of every round are
printed too: on a shared machine single numbers wander, interleaved ratios much less.

One-file targets: ``amplint check --no-cache`` on a torch module that does not mention AMP
(the prefilter drops it: no rule module or libcst is imported) and on a small training loop
with a GradScaler (``examples/trainer_class.py``), interpreter start included.

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
REPOSITORY = Path(__file__).resolve().parent.parent

#: The issue's targets (seconds): one clean file, one training loop, a warm re-run.
CLEAN_FILE_TARGET = 0.080
LOOP_FILE_TARGET = 0.250
WARM_TARGET = 0.15
#: A torch module without any AMP word, and a training loop with a GradScaler.
CLEAN_FILE = Path("nn") / "modules" / "linear.py"
LOOP_FILE = REPOSITORY / "examples" / "trainer_class.py"


@dataclass
class Tool:
    name: str
    command: list[str]
    #: how many of the tree's lines the command covers (TorchFix runs on a subset).
    share: float = 1.0
    prepare: list[str] | None = None
    walls: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    #: user + system CPU seconds of the process and its waited-for children.
    cpus: list[float] = field(default_factory=list)


#: As installed tools run: with compiled bytecode. An environment that forbids writing it
#: (PYTHONDONTWRITEBYTECODE) would have every run compile amplint's modules from source.
ENVIRONMENT = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(command: list[str], cwd: Path) -> tuple[float, int, int, float]:
    """Wall seconds, peak RSS (KiB), exit status and CPU seconds of one run."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENVIRONMENT
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {error.strip()[:400]}")
    return wall, usage.ru_maxrss, process.returncode, usage.ru_utime + usage.ru_stime


def record(tool: Tool, cwd: Path) -> None:
    wall, peak, _, cpu = measure(tool.command, cwd)
    tool.walls.append(wall)
    tool.peaks.append(peak)
    tool.cpus.append(cpu)


#: A project's root holds a pyproject.toml: amplint reads it on every run (its
#: configuration, the cache's place), as it would in a real project.
PROJECT_FILE = '[project]\nname = "benchmark-tree"\nversion = "0"\n'


def make_project(work: Path) -> None:
    (work / "pyproject.toml").write_text(PROJECT_FILE)


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
    parser.add_argument("--single-repeats", type=int, default=5, help="one-file runs per round")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="amplint-bench-"))
    tree = work / "tree"
    files, lines = copy_python_files(args.tree or torch_tree(), tree)
    make_project(work)
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

    singles = single_file_tools(tree, work, amplint, ruff)
    for tool in singles:  # warm-up: bytecode written, files in the page cache
        measure(tool.command, work)
    load_before = os.getloadavg()[0]
    for round_number in range(1, args.rounds + 1):
        for tool in tools:
            if tool.prepare:
                measure(tool.prepare, work)
            record(tool, work)
        for _ in range(args.single_repeats):
            for tool in singles:
                record(tool, work)
        print(f"round {round_number}/{args.rounds} done", file=sys.stderr)
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")

    medians = {tool.name: statistics.median(tool.walls) / tool.share for tool in tools}
    print(f"\n{'tool':<42} {'wall s':>9} {'spread':>7} {'CPU s':>7} {'peak MB':>9}")
    for tool in tools:
        note = "  (extrapolated to the whole tree)" if tool.share < 1 else ""
        cpu = statistics.median(tool.cpus) / tool.share
        print(
            f"{tool.name:<42} {medians[tool.name]:>9.2f} {spread(tool.walls):>7.2f}"
            f" {cpu:>7.2f} {max(tool.peaks) / 1024:>9.0f}{note}"
        )

    cold_tool, warm_tool, ruff_ef = tools[0], tools[1], tools[2]
    cold = medians[cold_tool.name]
    warm = medians[warm_tool.name]
    print("\nratios (amplint cold / peer; < 1 means amplint is faster):")
    for tool in tools[2:]:
        print(f"  cold / {tool.name:<40} {cold / medians[tool.name]:8.3f}")
    per_round = sorted(a / b for a, b in zip(cold_tool.walls, ruff_ef.walls, strict=True))
    print(
        "  cold / ruff E,F round by round: "
        + ", ".join(f"{ratio:.2f}" for ratio in per_round)
        + f" (median {statistics.median(per_round):.2f})"
    )
    if len(tools) > 4:
        print(f"  TorchFix / amplint cold: {medians[tools[4].name] / cold:.0f}x")
    print(f"  warm re-run: {warm:.3f} s")

    print(f"\none file at a time ({args.single_repeats} runs per round; wall and CPU ms):")
    print(f"  {'command':<46} {'median':>7} {'min':>6} {'max':>6} {'CPU':>6} {'peak MB':>8}")
    for tool in singles:
        walls = [wall * 1000 for wall in tool.walls]
        print(
            f"  {tool.name:<46} {statistics.median(walls):>7.0f} {min(walls):>6.0f}"
            f" {max(walls):>6.0f} {statistics.median(tool.cpus) * 1000:>6.0f}"
            f" {max(tool.peaks) / 1024:>8.0f}"
        )

    single = {tool.name: statistics.median(tool.walls) for tool in singles}
    checks = [
        (
            "cold <= ruff --select E,F",
            cold <= medians[ruff_ef.name],
            f"{cold / medians[ruff_ef.name]:.2f}x",
        ),
        (
            "cold peak memory <= ruff E,F's",
            max(cold_tool.peaks) <= max(ruff_ef.peaks),
            f"{max(cold_tool.peaks) / 1024:.0f} vs {max(ruff_ef.peaks) / 1024:.0f} MB",
        ),
        (f"warm <= {WARM_TARGET} s", warm <= WARM_TARGET, f"{warm:.3f} s"),
        (
            f"clean file <= {CLEAN_FILE_TARGET * 1000:.0f} ms",
            single[singles[0].name] <= CLEAN_FILE_TARGET,
            f"{single[singles[0].name] * 1000:.0f} ms",
        ),
        (
            f"training loop <= {LOOP_FILE_TARGET * 1000:.0f} ms",
            single[singles[2].name] <= LOOP_FILE_TARGET,
            f"{single[singles[2].name] * 1000:.0f} ms",
        ),
    ]
    print("\ntargets (medians):")
    for label, met, value in checks:
        print(f"  {'met ' if met else 'MISS'} {label:<36} {value}")
    shutil.rmtree(work, ignore_errors=True)


def spread(walls: list[float]) -> float:
    """Slowest round over fastest: how much this machine wandered during the run."""
    return max(walls) / min(walls) if walls else float("nan")


def single_file_tools(tree: Path, work: Path, amplint: list[str], ruff: list[str]) -> list[Tool]:
    clean = tree / CLEAN_FILE
    if not clean.is_file():  # another tree (the wild corpus): the file from installed torch
        clean = work / "clean" / CLEAN_FILE.name
        clean.parent.mkdir()
        shutil.copyfile(torch_tree() / CLEAN_FILE, clean)
    loop = work / "loop" / LOOP_FILE.name
    loop.parent.mkdir()
    shutil.copyfile(LOOP_FILE, loop)
    one = [*amplint[:2], "--no-cache", "--exit-zero"]
    return [
        Tool(f"amplint check {CLEAN_FILE.name} (no AMP)", [*one, str(clean)]),
        Tool(f"ruff E,F {CLEAN_FILE.name}", [*ruff, "--select", "E,F", str(clean)]),
        Tool(f"amplint check {LOOP_FILE.name} (AMP loop)", [*one, str(loop)]),
        Tool(f"ruff E,F {LOOP_FILE.name}", [*ruff, "--select", "E,F", str(loop)]),
    ]


if __name__ == "__main__":
    main()
