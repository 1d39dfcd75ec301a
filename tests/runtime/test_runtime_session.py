"""The runtime's state is one object: uninstall() and reset() each bring it back in one call."""

from __future__ import annotations

import threading
from typing import Any

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime import state
from amplint.runtime.session import SESSION, History, Live, Session
from runtime_helpers import batches, loss_of, tiny_model
from torch import nn

# torch's own warning about the scheduler stepping after the skipped first step
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step:UserWarning")

TorchGradScaler = torch.amp.GradScaler
TorchSchedulerStep = torch.optim.lr_scheduler.LRScheduler.step


def train(dtype: torch.dtype = torch.float16) -> nn.Module:
    """Four steps whose first overflows (huge initial scale, so the step is skipped), with a
    clip of still scaled gradients (AMP006) and a scheduler stepped after the skipped step
    (AMP107)."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    for x, y in batches(4):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # AMP006: still scaled
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    return model


def keyed(findings: list[ar.Finding]) -> list[tuple[Any, ...]]:
    return [(f.code, f.filename, f.line, f.count, f.first_step) for f in findings]


@pytest.mark.usefixtures("quiet")
def test_uninstall_forgets_every_piece_of_state_but_the_findings() -> None:
    ar.install(health=True, startup_steps=0)
    train()
    # The training left a mark on each part, so that the comparison below can fail.
    assert SESSION.live.installation is not None and SESSION.live.monitor is not None
    assert SESSION.live.hook_handle is not None and SESSION.live.scheduler_patch is not None
    assert SESSION.history.steps.latest == 4 and SESSION.history.scaler_sites
    assert SESSION.history.autocast_dtypes == {torch.float16}
    found = keyed(ar.report())
    assert {"AMP006", "AMP107"} <= {entry[0] for entry in found}
    summary = ar.summary()
    assert summary is not None and summary["skipped_steps"] >= 1

    ar.uninstall()

    # One place: everything is fresh but what was found, which the report still reads.
    assert Session(results=SESSION.results) == SESSION
    assert SESSION.live == Live() and SESSION.history == History()
    assert keyed(ar.report()) == found
    assert ar.summary() == summary
    # ... and torch is torch's again.
    assert torch.amp.GradScaler is TorchGradScaler
    assert torch.optim.lr_scheduler.LRScheduler.step is TorchSchedulerStep
    assert not torch.nn.modules.module._global_forward_hooks

    ar.reset()
    assert Session() == SESSION
    assert ar.report() == [] and ar.summary() is None


@pytest.mark.usefixtures("quiet")
def test_a_second_cycle_finds_what_the_first_found() -> None:
    def cycle() -> tuple[list[tuple[Any, ...]], dict[str, Any] | None]:
        with ar.checking(health=True, startup_steps=0) as seen:
            trained = train()
        assert not ar.installed()
        return keyed(seen.findings), ar.summary() | {"params": trained[0].weight.sum().item()}

    first = cycle()
    assert {"AMP006", "AMP107"} <= {entry[0] for entry in first[0]}
    assert cycle() == first
    # The findings of both add up until reset(): each was seen twice.
    assert [f.count for f in ar.report()] == [2 * entry[3] for entry in first[0]]


@pytest.mark.usefixtures("quiet")
def test_uninstall_forgets_the_autocast_dtypes_seen() -> None:
    """float16 in one installation, then bfloat16 with a scaler in the next: the second is
    AMP014 (a scaler with bfloat16 only), as in a fresh process."""
    with ar.checking():
        train(torch.float16)
    with ar.checking() as seen:
        train(torch.bfloat16)
    assert "AMP014" in [f.code for f in seen.findings]


def test_a_new_history_starts_every_thread_over() -> None:
    """Each thread's state lives in the session: reset() clears it in every thread, not only
    in the one calling it."""
    ar.install()
    marked = threading.Event()
    check = threading.Event()
    seen: list[bool] = []

    def worker() -> None:
        state.thread_state().in_scaler_step = 1
        marked.set()
        check.wait(10)
        seen.append(state.thread_state().in_scaler_step == 0)

    thread = threading.Thread(target=worker)
    thread.start()
    assert marked.wait(10)
    ar.reset()
    check.set()
    thread.join(10)
    assert seen == [True]
