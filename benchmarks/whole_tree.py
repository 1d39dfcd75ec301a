"""Run `amplint check` and `amplint fix --unsafe-fixes` over a copy of a whole real tree.

Asserts what a user trusts amplint with: no traceback; every file that compiled before
still compiles after the fix; a second fix changes nothing; files without findings are
byte-identical. Default tree: every `.py` file of this environment's site-packages.

    python benchmarks/whole_tree.py [TREE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

AMPLINT = [sys.executable, "-m", "amplint"]


def copy_tree(sources: list[Path], target: Path) -> int:
    count = 0
    for index, source in enumerate(sources):
        for path in source.rglob("*.py"):
            if not path.is_file():
                continue
            destination = target / str(index) / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
            count += 1
    return count


def compiles(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*AMPLINT, *args], cwd=cwd, capture_output=True, text=True)
    if "Traceback" in result.stdout + result.stderr or result.returncode not in (0, 1):
        raise SystemExit(f"amplint {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path)
    args = parser.parse_args()
    sources = args.trees or [Path(sysconfig.get_paths()["purelib"])]
    work = Path(tempfile.mkdtemp(prefix="amplint-tree-"))
    tree = work / "tree"
    files = copy_tree(sources, tree)
    paths = sorted(tree.rglob("*.py"))
    compiled_before = {p for p in paths if compiles(p)}
    before = {p: digest(p) for p in paths}

    start = time.perf_counter()
    check = run(["check", "--no-cache", "--exit-zero", "--statistics", "tree"], work)
    check_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run(["fix", "--no-cache", "--unsafe-fixes", "tree"], work)
    fix_seconds = time.perf_counter() - start
    changed = [p for p in paths if digest(p) != before[p]]
    broken = [p for p in changed if p in compiled_before and not compiles(p)]
    after_first = {p: digest(p) for p in paths}
    run(["fix", "--no-cache", "--unsafe-fixes", "tree"], work)
    unstable = [p for p in paths if digest(p) != after_first[p]]

    print(f"files: {files} ({len(compiled_before)} compile with this Python)")
    print(f"check: {check_seconds:.1f} s; findings by code:\n{check.stdout.strip() or '  none'}")
    print(f"fix:   {fix_seconds:.1f} s; files changed: {len(changed)}")
    print(f"files that compiled before and not after: {len(broken)}")
    print(f"files changed again by a second fix: {len(unstable)}")
    for path in [*broken, *unstable][:20]:
        print(f"  {path.relative_to(tree)}")
    shutil.rmtree(work, ignore_errors=True)
    if broken or unstable:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
