"""Modes (warn, raise, log), once-per-call-site reporting, report() records, threads."""

from __future__ import annotations

import logging
import threading
import warnings

import amplint.runtime as ar
import pytest
import torch
from runtime_helpers import batches, here, loss_of, tiny_model


def backward_in_autocast(steps: int = 3) -> int:
    """Runs `steps` backward passes inside autocast; returns the line of the backward."""
    model = tiny_model()
    line = 0
    for x, y in batches(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_of(model, x, y)
            line = here() + 1
            loss.backward()
    return line


def test_warn_mode_warns_once_per_call_site_at_the_users_line() -> None:
    with ar.checking("warn"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = backward_in_autocast(3)
    amp = [w for w in caught if issubclass(w.category, ar.AmpWarning)]
    assert len(amp) == 1
    assert issubclass(ar.AmpWarning, UserWarning)
    assert amp[0].message.code == "AMP001"
    assert (amp[0].filename, amp[0].lineno) == (__file__, line)
    (finding,) = ar.report()
    assert finding.count == 3


def test_raise_mode_raises_with_code() -> None:
    with ar.checking("raise"), pytest.raises(ar.AmpUsageError) as excinfo:
        backward_in_autocast(1)
    assert excinfo.value.code == "AMP001"
    assert isinstance(excinfo.value, RuntimeError)
    assert str(excinfo.value).startswith(f"{__file__}:")
    # Raise mode raises at every occurrence; the registry still counts per call site.
    with ar.checking("raise"), pytest.raises(ar.AmpUsageError):
        backward_in_autocast(1)
    (finding,) = ar.report()
    assert finding.count == 2


def test_log_mode_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    with ar.checking("log"), caplog.at_level(logging.WARNING, logger="amplint.runtime"):
        line = backward_in_autocast(2)
    assert len(caplog.records) == 1
    assert f"{__file__}:{line}: AMP001" in caplog.records[0].getMessage()


def test_report_records_fields_and_first_step() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking("log"):
        scaler = torch.amp.GradScaler("cpu")
        for i, (x, y) in enumerate(batches(4)):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            if i >= 2:
                line = here() + 1
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
    (finding,) = ar.report()
    assert finding.to_dict() == {
        "code": "AMP006",
        "message": finding.message,
        "filename": __file__,
        "line": line,
        "count": 2,
        "first_step": 2,
    }
    assert "scaler.unscale_(optimizer)" in finding.message
    ar.reset()
    assert ar.report() == []


def test_other_threads_autocast_is_not_blamed() -> None:
    entered, release = threading.Event(), threading.Event()

    def hold_autocast_open() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            entered.set()
            release.wait(10)

    model = tiny_model()
    thread = threading.Thread(target=hold_autocast_open)
    with ar.checking("raise"):
        thread.start()
        assert entered.wait(10)
        try:
            loss_of(model, *batches(1)[0]).backward()  # this thread has no autocast open
        finally:
            release.set()
            thread.join()
    assert ar.report() == []


def test_findings_from_many_threads_are_all_counted() -> None:
    errors: list[BaseException] = []
    lines: list[int] = []

    def worker() -> None:
        try:
            lines.append(backward_in_autocast(5))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    with ar.checking("log"):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    (finding,) = ar.report()
    assert finding.code == "AMP001" and finding.line == lines[0]
    assert finding.count == 20


def test_scaler_state_of_one_thread_does_not_leak_into_another() -> None:
    # Thread A back-propagates a scaled loss and stops before stepping; thread B then
    # steps its own optimizer directly on unscaled gradients: B must not get AMP004.
    model_a, model_b = tiny_model(0), tiny_model(1)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1)
    done = threading.Event()

    def thread_a() -> None:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model_a, *batches(1)[0])
        scaler.scale(loss).backward()
        done.set()

    with ar.checking("raise"):
        thread = threading.Thread(target=thread_a)
        thread.start()
        thread.join()
        assert done.is_set()
        opt_b.zero_grad()
        loss_of(model_b, *batches(1)[0]).backward()
        opt_b.step()
    assert ar.report() == []
