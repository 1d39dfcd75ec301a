"""Reliability: amplint never turns a working training script into a failing one.

Exceptions inside instrumented autocast regions leave torch's and amplint's state as plain
torch would; install() inside a running loop; threads; SIGINT/SIGTERM under `amplint run`;
unwritable report paths; `-W error` and failures of amplint's own checks. Real tiny models
on CPU throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime import activations, health, reporting, usage
from amplint.runtime.runner import run_script
from amplint.runtime.session import StepCounter
from amplint.runtime.state import thread_state
from runtime_helpers import batches, here, loss_of, tiny_model
from torch import nn

autocast_module = sys.modules["amplint.runtime.autocast"]  # the package's name is the class
scaler_module = sys.modules["amplint.runtime.scaler"]
TorchAutocast = torch.amp.autocast_mode.autocast  # never patched by install()
TorchGradScaler = torch.amp.grad_scaler.GradScaler


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only contend (seconds per run on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Boom(Exception):
    pass


def autocast_state() -> tuple[Any, ...]:
    """Everything torch keeps about autocast for this thread, nesting level included."""
    level = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return (
        torch.is_autocast_enabled("cpu"),
        torch.get_autocast_dtype("cpu"),
        torch.is_autocast_cache_enabled(),
        level,
    )


def amplint_state() -> tuple[Any, ...]:
    tls = thread_state()
    return (tls.fp16_forward, tls.unscaled_backward, len(tls.pending), tls.in_scaler_step)


def fail_inside(form: str, cls: type) -> None:
    """Raise Boom from a forward pass inside ``cls`` autocast regions, in one of three forms."""
    model, (x, _) = tiny_model(), batches(1)[0]
    if form == "with":
        with cls("cpu", dtype=torch.float16):
            model(x)
            raise Boom
    elif form == "nested":
        with (
            cls("cpu", dtype=torch.bfloat16),
            cls("cpu", enabled=False),
            cls("cpu", dtype=torch.float16),
        ):
            model(x)
            raise Boom
    else:

        @cls("cpu", dtype=torch.float16)
        def forward() -> torch.Tensor:
            model(x)
            raise Boom

        forward()


def train_bf16_without_scaler(steps: int = 3) -> nn.Module:
    """A correct bfloat16 loop: no GradScaler needed, nothing to report."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in batches(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
    return model


def train_fp16_with_scaler(scaler_cls: type, steps: int = 3, seed: int = 0) -> nn.Module:
    model = tiny_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = scaler_cls("cpu")
    for x, y in batches(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    return model


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


# Exceptions inside autocast regions --------------------------------------------------


@pytest.mark.parametrize("form", ["with", "nested", "decorator"])
def test_exception_in_autocast_leaves_state_as_plain_torch(form: str) -> None:
    before = autocast_state()
    with pytest.raises(Boom):
        fail_inside(form, TorchAutocast)
    plain = autocast_state()
    assert plain == before

    ar.install("raise")
    tracked_before = amplint_state()
    with pytest.raises(Boom):
        fail_inside(form, ar.autocast)
    assert autocast_state() == plain
    # The failed float16 forward is forgotten with the region: nothing left "open".
    assert amplint_state() == tracked_before
    # Correct loops afterwards, in raise mode: no AMP001 (region left open) and no AMP003
    # (the failed float16 forward blamed on a bfloat16 loop without a scaler).
    train_bf16_without_scaler()
    train_fp16_with_scaler(torch.amp.GradScaler)
    assert ar.report() == []


def test_exception_mid_iteration_then_training_goes_on() -> None:
    # A step that fails between forward and backward (as a bad batch would) and a loop
    # that catches it and continues: the steps after it are judged on their own.
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ar.install("raise")
    scaler = torch.amp.GradScaler("cpu")
    for step, (x, y) in enumerate(batches(4)):
        opt.zero_grad()
        try:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
                if step == 1:
                    raise Boom
        except Boom:
            continue
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert autocast_state()[0] is False
    assert ar.report() == []


def test_failing_region_bookkeeping_does_not_leave_the_region_open(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(device: str, dtype: torch.dtype) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(autocast_module, "note_autocast_entered", broken)
    before = autocast_state()
    ar.install("raise")
    with ar.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
    assert autocast_state() == before
    train_bf16_without_scaler()
    assert ar.report() == []
    assert capsys.readouterr().err.count("amplint: internal error in the autocast region") == 1


# install() inside a running loop -----------------------------------------------------


def test_install_inside_a_running_loop_with_objects_made_before() -> None:
    def train(install_at: int | None) -> nn.Module:
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu")  # torch's own: made before install()
        for step, (x, y) in enumerate(batches(6)):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
                if step == install_at:
                    ar.install("raise", health=True)  # inside the region, mid-step
            if step == install_at:
                ar.install("raise")  # twice: only the settings change
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        return model

    reference = train(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checked = train(install_at=2)
    assert ar.installed()
    assert same_parameters(reference, checked)
    # torch's GradScaler is a GradScaler: its float16 backward is not AMP003.
    assert ar.report() == []
    assert reporting.internal_errors() == []
    ar.uninstall()
    ar.uninstall()
    assert torch.amp.GradScaler is TorchGradScaler


def test_install_mid_loop_still_finds_later_bugs() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    line = 0
    for step, (x, y) in enumerate(batches(4)):
        if step == 1:
            ar.install("log")
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
            line = here() + 1
            scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    found = [(f.code, f.line, f.count) for f in ar.report()]
    assert found == [("AMP001", line, 3)]


# Threads ------------------------------------------------------------------------------


def test_two_threads_one_buggy_one_correct_report_only_the_buggy_one() -> None:
    steps = 5
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []
    lines: dict[str, int] = {}
    models: dict[str, nn.Module] = {}
    # Built here: tiny_model seeds the global generator, which two threads would race on.
    initial = {"correct": tiny_model(0), "buggy": tiny_model(1)}

    def correct() -> None:
        model = initial["correct"]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(steps, seed=2):
            barrier.wait()
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
                barrier.wait()  # the buggy thread is inside its region now too
            scaler.scale(loss).backward()
            barrier.wait()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        models["correct"] = model

    def buggy() -> None:
        model = initial["buggy"]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches(steps, seed=3):
            barrier.wait()
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
                barrier.wait()
                lines["backward"] = here() + 1
                loss.backward()  # AMP001, and AMP003: float16 without a scaler
            barrier.wait()
            opt.step()

    def run(target: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                barrier.abort()

        return body

    with ar.checking("log"):
        threads = [threading.Thread(target=run(f)) for f in (correct, buggy)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []
    found = sorted((f.code, f.filename, f.line, f.count) for f in ar.report())
    assert found == [
        ("AMP001", __file__, lines["backward"], steps),
        ("AMP003", __file__, lines["backward"], steps),
    ]
    # The correct thread trained as it would alone.
    assert same_parameters(models["correct"], _train_alone(steps))


def _train_alone(steps: int) -> nn.Module:
    model = tiny_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = TorchGradScaler("cpu")
    for x, y in batches(steps, seed=2):
        opt.zero_grad()
        with TorchAutocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    return model


# warn mode and `-W error` ---------------------------------------------------------------


def train_accumulating(steps: int = 4, every: int = 2) -> nn.Module:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for i, (x, y) in enumerate(batches(steps)):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y) / every
        scaler.scale(loss).backward()
        if (i + 1) % every == 0:
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    return model


def train_disabled_amp(steps: int = 3) -> nn.Module:
    use_amp = False
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=use_amp)
    for x, y in batches(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16, enabled=use_amp):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return model


CORRECT_LOOPS: list[Callable[[], nn.Module]] = [
    train_bf16_without_scaler,
    lambda: train_fp16_with_scaler(torch.amp.GradScaler),
    train_accumulating,
    train_disabled_amp,
]


def test_correct_loops_under_warnings_as_errors_run_unchanged() -> None:
    references = [loop() for loop in CORRECT_LOOPS]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ar.install("warn", health=True)
        checked = [loop() for loop in CORRECT_LOOPS]
        findings = ar.report()
        ar.uninstall()
    assert all(same_parameters(a, b) for a, b in zip(references, checked, strict=True))
    assert findings == []
    assert reporting.internal_errors() == []


def test_warnings_as_errors_raise_a_finding_at_the_users_line_only() -> None:
    # The user asked for errors: an AmpWarning at the user's call is one, as in raise mode.
    model = tiny_model()
    x, y = batches(1)[0]
    ar.install("warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ar.AmpWarning) as caught, torch.autocast("cpu", dtype=torch.bfloat16):
            line = here() + 1
            loss_of(model, x, y).backward()
    assert caught.value.code == "AMP001"
    assert (ar.report()[0].code, ar.report()[0].line) == ("AMP001", line)
    assert autocast_state()[0] is False and autocast_state()[3] == 0

    # Where torch itself rejects the call (a second step without update), torch's own
    # error comes out, exactly as without amplint; the finding is still recorded.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(loss_of(model, x, y)).backward()
    scaler.step(opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
            scaler.step(opt)
    assert "AMP002" in [f.code for f in ar.report()]


def test_correct_example_script_under_warnings_as_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "runtime_correct_train.py"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status = run_script(
            str(example), ["--steps", "3", "--exit-code", "4"], mode="warn", health=True
        )
    captured = capsys.readouterr()
    assert status == 4
    assert captured.out.startswith("trained 3 steps")
    assert "Traceback" not in captured.err and "internal error" not in captured.err


# amplint's own failures ------------------------------------------------------------------


def test_internal_errors_in_checks_never_reach_the_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    reference = train_fp16_with_scaler(TorchGradScaler, steps=4)
    # One failure in each kind of hook: backward, optimizer step, clipping, zero_grad, and
    # the health statistics read at report time.
    monkeypatch.setattr(usage, "usage_of_tensors", broken)
    monkeypatch.setattr(usage, "thread_state", broken)
    monkeypatch.setattr(usage, "autocast_active", broken)
    monkeypatch.setattr(health.Monitor, "flush", broken)
    for mode in ("warn", "raise"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ar.install(mode, health=True)
            checked = train_fp16_with_scaler(torch.amp.GradScaler, steps=4)
            train_bf16_without_scaler()
            ar.report()
            ar.uninstall()
        assert same_parameters(reference, checked)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("amplint: internal error")]
    assert len(notes) == len(set(notes)) == len(reporting.internal_errors()) >= 4
    assert all("RuntimeError: injected" in note for note in notes)
    assert "Traceback" not in err
    ar.reset()
    assert reporting.internal_errors() == []


def train_with_scheduler(scaler_cls: type, steps: int = 5) -> nn.Module:
    """A correct float16 loop using every GradScaler method and an LR scheduler."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    scaler = scaler_cls("cpu", init_scale=256.0)
    for x, y in batches(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        scaler.get_scale()
    scaler.state_dict()
    return model


# Every part amplint adds to GradScaler's methods and to the health hooks, made to fail:
# (owner, attribute, the internal-error note it must give).
SCALER_AND_HEALTH_FAILURES: list[tuple[Any, str, str]] = [
    (scaler_module.GradScaler, "_after_init", "the GradScaler() check"),
    (scaler_module.GradScaler, "_after_scale", "the GradScaler.scale() bookkeeping"),
    (scaler_module.GradScaler, "_before_unscale", "the GradScaler.unscale_() check"),
    (scaler_module.GradScaler, "_after_unscale", "the GradScaler.unscale_() bookkeeping"),
    (scaler_module.GradScaler, "_before_step", "the GradScaler.step() check"),
    (scaler_module.GradScaler, "_after_step", "the GradScaler.step() bookkeeping"),
    (scaler_module, "_enter_scaler_step", "the GradScaler.step() marker"),
    (StepCounter, "count", "the step counter"),
    (scaler_module.GradScaler, "_before_update", "the GradScaler.update() check"),
    (scaler_module.GradScaler, "_after_update", "the GradScaler.update() bookkeeping"),
    (scaler_module.GradScaler, "_after_get_scale", "the GradScaler.get_scale() check"),
    (scaler_module.GradScaler, "_check_state_dict", "the GradScaler.state_dict() check"),
    (health.ScalerHealth, "on_scale", "the numerical-health check in GradScaler.scale()"),
    (health.ScalerHealth, "on_unscale", "the numerical-health check in GradScaler.unscale_()"),
    (health, "scaler_step_begin", "the numerical-health check in GradScaler.step()"),
    (health.ScalerHealth, "after_update", "the numerical-health check in GradScaler.update()"),
    (activations, "uses_scalers", "the activation check (forward hook)"),
    (health.Monitor, "scheduler_stepped", "the LR-scheduler check"),
]


@pytest.mark.parametrize("mode", ["warn", "raise"])
def test_internal_errors_in_the_scaler_and_health_never_reach_the_training(
    mode: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    reference = train_with_scheduler(TorchGradScaler)
    for owner, name, _ in SCALER_AND_HEALTH_FAILURES:
        monkeypatch.setattr(owner, name, broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ar.install(mode, health=True)
        checked = train_with_scheduler(torch.amp.GradScaler)
        ar.report()
        ar.uninstall()
    assert same_parameters(reference, checked)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    notes = [line for line in err.splitlines() if line.startswith("amplint: internal error")]
    wheres = [error.split(": RuntimeError: injected")[0] for error in reporting.internal_errors()]
    # Each failure once, on stderr and in the report's list; every injected one is there
    # (a hook may add its own: the optimizer.step() inside an unmarked scaler.step()).
    assert len(notes) == len(set(notes)) == len(wheres)
    assert all("RuntimeError: injected" in note for note in notes)
    assert {where for _, _, where in SCALER_AND_HEALTH_FAILURES} <= set(wheres)


def test_a_failing_activation_reduction_leaves_grad_mode_as_it_was(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hook turns grad mode off around its reduction: if the reduction fails, the
    # forward and the backward after it must still run as under plain torch.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    reference = train_with_scheduler(TorchGradScaler)
    monkeypatch.setattr(activations, "_aminmax", broken)
    ar.install("warn", health=True)
    checked = train_with_scheduler(torch.amp.GradScaler)
    ar.uninstall()
    assert torch.is_grad_enabled()
    assert same_parameters(reference, checked)
    assert any("forward hook" in where for where in reporting.internal_errors())
    assert "Traceback" not in capsys.readouterr().err


def test_torch_errors_pass_through_a_failing_scaler_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # amplint's checks around torch's call fail; torch's own error still comes out as is.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    model = tiny_model()
    x, y = batches(1)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ar.install("raise")
    monkeypatch.setattr(scaler_module.GradScaler, "_before_step", broken)
    monkeypatch.setattr(scaler_module.GradScaler, "_before_unscale", broken)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(loss_of(model, x, y)).backward()
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called") as caught:
        scaler.step(opt)
    assert type(caught.value) is RuntimeError
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step") as caught:
        scaler.unscale_(opt)
    assert type(caught.value) is RuntimeError


def test_findings_after_an_internal_error_never_stop_the_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The unscale_ bookkeeping fails: the clip after it looks like clipping scaled
    # gradients (AMP006). After amplint's own failure such a finding is recorded and
    # shown, never raised, whatever the mode or the warnings filter.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    reference = train_fp16_with_scaler(TorchGradScaler, steps=3)
    monkeypatch.setattr(usage, "on_unscaled", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ar.install("raise")
        assert reporting.may_raise()
        checked = train_fp16_with_scaler(torch.amp.GradScaler, steps=3)
        assert not reporting.may_raise()
    assert same_parameters(reference, checked)
    assert [f.code for f in ar.report()] == ["AMP006"]
    assert reporting.internal_errors() == [
        "the GradScaler.unscale_() bookkeeping: RuntimeError: injected"
    ]
    assert "Traceback" not in capsys.readouterr().err
    ar.reset()
    assert reporting.may_raise()


def test_internal_error_is_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("injected")

    monkeypatch.setattr(usage, "autocast_active", broken)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    report_path = tmp_path / "report.json"
    status = run_script(str(script), ["2", "5"], mode="raise", report_path=str(report_path))
    assert status == 5
    assert capsys.readouterr().out == "trained 2\n"
    document = json.loads(report_path.read_text())
    assert document["exit_status"] == 5
    assert any("ValueError: injected" in note for note in document["internal_errors"])


# Unwritable report paths ----------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """\
    import sys
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(int(sys.argv[1])):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
        loss.backward()
        opt.step()
    print("trained", sys.argv[1])
    sys.exit(int(sys.argv[2]))
    """
)


def _unwritable(tmp_path: Path, kind: str) -> Path:
    if kind == "missing-dir":
        return tmp_path / "absent" / "report.json"
    if kind == "is-a-directory":
        (tmp_path / "report.json").mkdir()
        return tmp_path / "report.json"
    if kind == "parent-is-a-file":
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "report.json"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").write_text("")
    except OSError:
        return folder / "report.json"
    pytest.skip("permissions do not stop this user (root) from writing")


@pytest.mark.parametrize("kind", ["missing-dir", "is-a-directory", "parent-is-a-file", "read-only"])
def test_unwritable_report_path_is_one_line_and_changes_nothing(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    path = _unwritable(tmp_path, kind)
    status = run_script(str(script), ["2", "3"], mode="warn", report_path=str(path))
    captured = capsys.readouterr()
    assert status == 3
    assert captured.out == "trained 2\n"
    (line,) = captured.err.splitlines()
    assert line.startswith(f"amplint: cannot write the report to {str(path)!r}: ")


# Signals under `amplint run` ------------------------------------------------------------

FOREVER = textwrap.dedent(
    """\
    import time
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = 0
    while True:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
            loss.backward()
        opt.step()
        step += 1
        if step == 2:
            print("ready", flush=True)
        time.sleep(0.005)
    """
)


def _start(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    def default_sigint() -> None:
        # A shell starts background jobs with SIGINT ignored; Python then keeps it so.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_report_written_when_killed_by_sigterm_or_sigint(tmp_path: Path) -> None:
    (tmp_path / "forever.py").write_text(FOREVER)
    cli = [sys.executable, "-m", "amplint", "run"]
    runner = [sys.executable, "-m", "amplint.runtime.runner"]
    # Two processes, started together: `amplint run` (click), and the same runner without
    # click, whose entry point also ends the process as Python does after SIGINT.
    runs = {
        "term": (signal.SIGTERM, cli),
        "int": (signal.SIGINT, runner),
        "cli-int": (signal.SIGINT, cli),
    }
    processes = {
        name: _start([*prefix, "--report", f"{name}.json", "forever.py"], tmp_path)
        for name, (_, prefix) in runs.items()
    }
    outputs: dict[str, tuple[int, str, str]] = {}
    try:
        for name, process in processes.items():
            assert process.stdout is not None
            ready = process.stdout.readline()
            assert ready == "ready\n", process.communicate(timeout=60)[1]
            process.send_signal(runs[name][0])
        for name, process in processes.items():
            out, err = process.communicate(timeout=120)
            outputs[name] = (process.returncode, ready + out, err)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    script = str(tmp_path / "forever.py")

    # SIGTERM: Python dies of the signal at once (-15; 143 in a shell). So does amplint run,
    # after writing the report and printing its summary.
    status, _, err = outputs["term"]
    assert status == -signal.SIGTERM, err
    assert "Traceback" not in err
    assert "amplint: 1 AMP finding(s)" in err
    document = json.loads((tmp_path / "term.json").read_text())
    assert document["exit_status"] == 143 and document["signal"] == "SIGTERM"
    ((code, filename, line, count),) = [
        (f["code"], f["filename"], f["line"], f["count"]) for f in document["findings"]
    ]
    assert (code, filename, line) == ("AMP001", script, 13) and count >= 2

    # SIGINT: KeyboardInterrupt with Python's traceback from the script's frame; Python
    # then dies of SIGINT (-2 to a parent, 130 in a shell), and so does the runner.
    status, _, err = outputs["int"]
    assert status == -signal.SIGINT, err
    lines = err.splitlines()
    start = lines.index("Traceback (most recent call last):")
    assert lines[start + 1].startswith(f'  File "{script}", line ')
    assert "KeyboardInterrupt" in lines
    assert "amplint: 1 AMP finding(s)" in err
    document = json.loads((tmp_path / "int.json").read_text())
    assert document["exit_status"] == 130
    assert [f["code"] for f in document["findings"]] == ["AMP001"]

    # `amplint run` ends after Ctrl-C the same way, so a shell loop around it stops.
    status, _, err = outputs["cli-int"]
    assert status == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err.splitlines()
    assert json.loads((tmp_path / "cli-int.json").read_text())["exit_status"] == 130
