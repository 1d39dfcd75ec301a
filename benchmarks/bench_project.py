"""What following imports between modules costs: a cold check of a tree with the project
analysis on (the default for a directory) against the same run with every file on its own.

Both runs go through ``amplint.api.check_paths`` in this process, without the cache,
interleaved round by round. CPU time (``time.process_time``, single process) is the
figure to trust on a shared machine; wall time is printed beside it.

    python benchmarks/bench_project.py                     # the installed torch package
    python benchmarks/bench_project.py --tree src/ --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import amplint.api as api
from amplint.config import load_settings


def torch_tree() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise SystemExit("torch is not installed: pass --tree")
    return Path(spec.origin).parent


def one_run(tree: Path, project: bool) -> tuple[float, float, int]:
    """CPU seconds, wall seconds and findings of one cold check of ``tree``."""
    settings = load_settings(None, tree)
    codes = api.selected_codes(settings)
    original = api.project_for
    if not project:
        api.project_for = lambda paths, files: None  # type: ignore[assignment]
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        result = api.check_paths([tree], settings, codes, use_cache=False, jobs=1)
        return time.process_time() - cpu, time.perf_counter() - wall, len(result.findings)
    finally:
        api.project_for = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tree = (args.tree or torch_tree()).resolve()
    files = sum(1 for _ in tree.rglob("*.py"))
    print(f"tree: {tree} ({files} files), {args.rounds} rounds, one process, no cache")
    one_run(tree, project=False)  # imports and the first reads, outside the measurement
    alone: list[tuple[float, float, int]] = []
    project: list[tuple[float, float, int]] = []
    for _ in range(args.rounds):
        alone.append(one_run(tree, project=False))
        project.append(one_run(tree, project=True))
    for name, runs in (("each file alone", alone), ("project analysis", project)):
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"{name:18} cpu {cpu:7.2f} s  wall {wall:7.2f} s  findings {runs[-1][2]}")
    ratio = statistics.median(p[0] / a[0] for a, p in zip(alone, project, strict=True))
    print(f"project / alone (cpu, median of per-round ratios): {ratio:.3f}")


if __name__ == "__main__":
    main()
