"""Run PyTorch's own GradScaler tests against amplint's GradScaler.

PyTorch's ``test/test_torch.py`` holds device-generic grad-scaling tests in
``TestTorchDeviceType`` (``test_grad_scaling_*``, ``test_grad_scaler_*``,
``test_pickle_gradscaler``, ``test_grad_scale_will_not_overflow``,
``test_params_invalidated_*``) that run on CPU. This script takes the path of such a file
(from a PyTorch checkout matching the installed torch; it is not shipped with amplint),
selects those tests with pytest ``-k`` and runs them on CPU in one fresh process per mode:

* ``patch``: ``torch.GradScaler`` / ``torch.amp.GradScaler`` (and the deprecated
  ``torch.cpu.amp.GradScaler`` / ``torch.cuda.amp.GradScaler``) rebound to amplint's
  classes before the test module is imported; no other hook;
* ``warn`` / ``log`` / ``raise``: ``amplint.runtime.install(mode=...)`` instead, i.e. the
  same names plus the backward / clipping / optimizer hooks;
* ``health`` / ``health-raise``: ``install(mode="warn" / "raise", health=True, every=1,
  underflow_every=1)``: the numerical-health checks too, statistics handed over every step.

Every scaler a test builds goes through torch's base ``__init__``; the script records the
class of each and fails the test if one is not amplint's, so a pass proves the patch was in
effect. It prints per mode the pass / fail / skip counts, the failures, and the amplint
codes each test triggered (``raise`` mode legitimately fails tests that misuse a scaler on
purpose; those are listed with their code).

    .venv/bin/python benchmarks/run_upstream_gradscaler_tests.py PATH/test_torch.py \
        [--modes patch,warn,log,raise,health,health-raise] [-k EXPR] [--show-findings] \
        [-- PYTEST_ARGS...]

Needs ``expecttest`` (imported by torch.testing._internal), e.g. ``pip install expecttest``
or a folder holding it on ``PYTHONPATH``. Exit status 0 when every test passed in every
mode, but for the tests listed in ``EXPECTED_RAISE`` stopped with their code in the raise
modes; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MODES = ("patch", "warn", "log", "raise", "health", "health-raise")
RAISE_MODES = ("raise", "health-raise")
DEFAULT_K = "grad_scal or gradscaler or params_invalidated"
# Tests that misuse a scaler on purpose (name prefix: codes): in the raise modes amplint
# stops them with one of these codes.
EXPECTED_RAISE = {
    # builds the deprecated torch.cpu.amp.GradScaler to check torch's FutureWarning
    "test_grad_scaler_deprecated_warning": {"AMP007"},
    # writes inf/nan into the gradients between unscale_ and step (health checks only);
    # the error comes from update(), after torch's step and update ran unchanged
    "test_params_invalidated_with_grads_invalidated": {"AMP101", "AMP106"},
}


class _Recorder:
    """pytest plugin: outcomes, scaler classes built and amplint codes seen, per test."""

    def __init__(self, mode: str) -> None:
        import amplint.runtime as ar
        import torch

        self.mode = mode
        self.ar = ar
        self.base = torch.amp.grad_scaler.GradScaler  # torch's class, whatever is patched
        self.results: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        import torch

        assert torch.GradScaler is self.ar.GradScaler, "torch.GradScaler is not patched"
        assert torch.amp.GradScaler is self.ar.GradScaler, "torch.amp.GradScaler is not patched"
        base_init = self.base.__init__
        built: list[type] = []

        def recording_init(scaler: Any, *args: Any, **kwargs: Any) -> None:
            built.append(type(scaler))
            base_init(scaler, *args, **kwargs)

        before = {(f.code, f.filename, f.line): f.count for f in self.ar.report()}
        self.base.__init__ = recording_init  # type: ignore[method-assign]
        try:
            result = yield
        finally:
            self.base.__init__ = base_init  # type: ignore[method-assign]
            codes = sorted(
                {
                    f.code
                    for f in self.ar.report()
                    if f.count > before.get((f.code, f.filename, f.line), 0)
                }
            )
            self.results.setdefault(item.nodeid, {})["codes"] = codes
            self.results[item.nodeid]["scalers"] = sorted(
                {f"{c.__module__}.{c.__qualname__}" for c in built}
            )
        foreign = [cls for cls in built if not issubclass(cls, self.ar.GradScaler)]
        assert not foreign, f"scalers not from amplint were built: {foreign}"
        return result

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.results.setdefault(report.nodeid, {})
        if report.when == "call" or report.outcome != "passed":
            if entry.get("outcome") in (None, "passed"):
                entry["outcome"] = report.outcome
            if report.failed:
                entry["error"] = report.longreprtext.strip().splitlines()[-1:]


def _patch_names() -> None:
    import amplint.runtime as ar
    import torch
    import torch.cpu.amp
    import torch.cuda.amp

    torch.GradScaler = ar.GradScaler  # type: ignore[misc]
    torch.amp.GradScaler = ar.GradScaler  # type: ignore[misc]
    torch.cpu.amp.GradScaler = ar.CpuGradScaler  # type: ignore[misc]
    torch.cuda.amp.GradScaler = ar.CudaGradScaler  # type: ignore[misc]


def worker(mode: str, test_file: str, keyword: str, out: str, extra: list[str]) -> int:
    """One mode in this process: patch, then let pytest import and run the tests."""
    import amplint.runtime as ar

    if mode == "patch":
        _patch_names()
    elif mode.startswith("health"):
        # numerical-health checks at every step, on top of the usage checks
        ar.install(mode=mode.partition("-")[2] or "warn", health=True, every=1, underflow_every=1)
    else:
        ar.install(mode=mode)
    warnings.simplefilter("default", ar.AmpWarning)
    recorder = _Recorder(mode)
    # --noconftest: PyTorch's test/conftest.py (sharding, CI reports) is not needed here.
    args = [test_file, "-k", keyword, "-q", "-p", "no:cacheprovider", "-rN", "--noconftest"]
    args += extra
    args += ["--rootdir", str(Path(test_file).parent)]
    code = pytest.main(args, plugins=[recorder])
    Path(out).write_text(json.dumps(recorder.results, indent=1))
    return int(code)


def _short(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _expected_in_raise(name: str, entry: dict[str, Any]) -> str | None:
    """The code that legitimately stopped this test in a raise mode, if any."""
    for prefix, codes in EXPECTED_RAISE.items():
        if name.startswith(prefix):
            found = sorted(codes & set(entry.get("codes", [])))
            if found:
                return ", ".join(found)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test_file", help="path of PyTorch's test/test_torch.py")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES)
    )
    parser.add_argument(
        "-k", dest="keyword", default=DEFAULT_K, help=f"pytest -k (default {DEFAULT_K!r})"
    )
    parser.add_argument("--show-findings", action="store_true", help="list amplint codes per test")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    test_file = str(Path(args.test_file).resolve())

    if args.worker:
        return worker(args.worker, test_file, args.keyword, args.out, args.pytest_args)

    if not Path(test_file).is_file():
        parser.error(f"no such file: {test_file}")
    try:
        import expecttest  # noqa: F401
    except ImportError:
        print("torch.testing._internal needs expecttest: pip install expecttest", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(unknown)}")

    env = dict(os.environ, PYTORCH_TESTING_DEVICE_ONLY_FOR="cpu")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            out = str(Path(tmp) / f"{mode}.json")
            cmd = [sys.executable, __file__, test_file, "--worker", mode, "--out", out]
            cmd += ["-k", args.keyword]
            if args.pytest_args:
                cmd += ["--", *args.pytest_args]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if not Path(out).is_file():
                print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
                print(f"[{mode}] pytest did not run (exit {proc.returncode})")
                ok = False
                continue
            results: dict[str, dict[str, Any]] = json.loads(Path(out).read_text())
            counts = {"passed": 0, "failed": 0, "skipped": 0}
            expected = []
            failures = []
            for nodeid, entry in sorted(results.items()):
                outcome = entry.get("outcome", "failed")
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome == "failed":
                    name = _short(nodeid)
                    why = _expected_in_raise(name, entry) if mode in RAISE_MODES else None
                    if why:
                        expected.append(f"{name} ({why})")
                    else:
                        failures.append((name, entry))
            print(
                f"[{mode}] {len(results)} tests: {counts['passed']} passed, "
                f"{counts['failed']} failed ({len(expected)} expected), {counts['skipped']} skipped"
            )
            for name in expected:
                print(f"    stopped on purpose: {name}")
            for name, entry in failures:
                print(f"    FAILED {name}: {' '.join(entry.get('error', []))}")
            if args.show_findings:
                for nodeid, entry in sorted(results.items()):
                    if entry.get("codes"):
                        print(f"    {_short(nodeid)}: {', '.join(entry['codes'])}")
            ok = ok and not failures and proc.returncode in (0, 1)
            if not results:
                ok = False
    print("OK" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
