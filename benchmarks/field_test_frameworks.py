"""Field test: the frameworks' minimal loops on CPU, plain Python against `amplint run`.

Needs the optional extra: ``pip install -e '.[frameworks]'`` (Accelerate, Lightning,
transformers). For each script of ``tests/fixtures/frameworks`` it runs ``python SCRIPT``
and ``amplint run SCRIPT`` interleaved, prints the median wall times, their ratio and the
codes amplint reported; then the linter over the installed frameworks' own source (the
new framework codes, every finding listed); then the marked runtime suite
(``pytest -m frameworks``)::

    .venv/bin/python benchmarks/field_test_frameworks.py [--repeats 3] [--no-suite]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "fixtures" / "frameworks"
PACKAGES = ("accelerate", "lightning", "transformers")
#: (script, arguments); "{tmp}" is a scratch folder.
RUNS = (
    ("accelerate_bf16_cpu.py", ()),
    ("accelerate_backward_in_autocast.py", ()),
    ("lightning_bf16_cpu.py", ("auto",)),
    ("lightning_bf16_cpu.py", ("manual",)),
    ("lightning_bf16_cpu.py", ("manual-own-autocast",)),
    ("lightning_fp16_plugin_cpu.py", ()),
    ("lightning_fp16_plugin_cpu.py", ("half",)),
    ("hf_trainer_cpu.py", ("{tmp}/out",)),
)
FRAMEWORK_CODES = "AMP001,AMP006,AMP022,AMP023,AMP024,AMP025"


def _timed(command: list[str], cwd: Path) -> tuple[float, int]:
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - start, completed.returncode


def field_runs(repeats: int) -> None:
    print(f"{'script':48} {'python s':>9} {'amplint s':>9} {'ratio':>6}  status  codes")
    for script, arguments in RUNS:
        with tempfile.TemporaryDirectory() as scratch:
            tmp = Path(scratch)
            args = [a.format(tmp=tmp) for a in arguments]
            report = tmp / "report.json"
            plain_times, amplint_times = [], []
            status = (0, 0)
            for _ in range(repeats):  # interleaved: both see the same machine load
                seconds, plain_status = _timed([sys.executable, str(SCRIPTS / script), *args], tmp)
                plain_times.append(seconds)
                command = [sys.executable, "-m", "amplint", "run", "--report", str(report)]
                seconds, run_status = _timed([*command, str(SCRIPTS / script), *args], tmp)
                amplint_times.append(seconds)
                status = (plain_status, run_status)
            found = json.loads(report.read_text())["findings"] if report.exists() else []
            codes = ",".join(f"{f['code']}@{f['line']}" for f in found) or "-"
            plain, checked = statistics.median(plain_times), statistics.median(amplint_times)
            name = " ".join([script, *arguments]).replace("{tmp}/", "")
            print(
                f"{name:48} {plain:9.2f} {checked:9.2f} {checked / plain:6.2f}  "
                f"{status[0]}/{status[1]:<4}  {codes}"
            )


def lint_framework_sources() -> None:
    folders = []
    for package in ("accelerate", "transformers", "lightning", "peft"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folders.extend(spec.submodule_search_locations)
    files = sum(1 for folder in folders for _ in Path(folder).rglob("*.py"))
    start = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "amplint",
            "check",
            "--no-cache",
            "--exit-zero",
            "--select",
            FRAMEWORK_CODES,
            "--output-format",
            "json",
            *folders,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    seconds = time.perf_counter() - start
    found = [f for f in json.loads(completed.stdout or "[]") if f["code"] != "AMP999"]
    print(f"\nlinter over the frameworks' own source: {files} files in {seconds:.1f} s")
    print(f"  {FRAMEWORK_CODES}: {len(found)} finding(s)")
    for finding in found:
        print(f"  {finding['filename']}:{finding['location']['row']}: {finding['code']}")


def marked_suite() -> int:
    start = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "frameworks",
            "-p",
            "no:cacheprovider",
            "tests/runtime/test_runtime_frameworks.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    last = (completed.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"\npytest -m frameworks: {last} ({time.perf_counter() - start:.1f} s wall)")
    return completed.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-suite", action="store_true", help="skip the pytest suite")
    options = parser.parse_args()
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        print(f"needs {', '.join(missing)}: pip install -e '.[frameworks]'", file=sys.stderr)
        return 2
    field_runs(options.repeats)
    lint_framework_sources()
    return 0 if options.no_suite else marked_suite()


if __name__ == "__main__":
    sys.exit(main())
