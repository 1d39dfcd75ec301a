"""torch 2.6's split clip, ``get_total_norm`` then ``clip_grads_with_norm_``, checked as one
clip: both halves must see unscaled gradients (AMP006), and the norm's
``error_if_nonfinite=True`` turns routine overflow into crashes (AMP018)."""

from __future__ import annotations

import amplint.runtime as ar
import pytest
import torch
from runtime_helpers import batches, codes, here, loss_of, tiny_model

pytestmark = [
    pytest.mark.usefixtures("quiet"),
    pytest.mark.skipif(not hasattr(torch.nn.utils, "clip_grads_with_norm_"), reason="torch < 2.6"),
]

FP16 = torch.float16


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in model.parameters() if p.grad is not None]


def _train(order: str, *, steps: int = 3, max_norm: float = 0.05) -> tuple[list, torch.nn.Module]:
    """A float16 CPU loop clipping with the split API; ``order`` says where ``unscale_``
    goes: before the norm (right), between norm and clip, or after both."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lines: dict[str, int] = {}
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for x, y in batches(steps):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=FP16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            if order == "unscale first":
                scaler.unscale_(optimizer)
            lines["norm"] = here() + 1
            norm = torch.nn.utils.get_total_norm(_grads(model))
            if order == "unscale between":
                scaler.unscale_(optimizer)
            lines["clip"] = here() + 1
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)
            if order == "unscale last":
                scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
    return [(f.code, f.line, f.message) for f in seen.findings], lines, model  # type: ignore[return-value]


def test_split_clip_after_unscale_is_silent_and_trains_as_torch() -> None:
    findings, _lines, model = _train("unscale first")
    assert findings == []
    # The same loop with torch's own classes and nothing installed: identical weights.
    plain = tiny_model()
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for x, y in batches(3):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=FP16):
            loss = loss_of(plain, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.get_total_norm(_grads(plain))
        torch.nn.utils.clip_grads_with_norm_(plain.parameters(), 0.05, norm)
        scaler.step(optimizer)
        scaler.update()
    for ours, theirs in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_split_clip_before_unscale_is_amp006_at_the_clip() -> None:
    findings, lines, _model = _train("unscale last")
    assert [(code, line) for code, line, _ in findings] == [("AMP006", lines["clip"])]
    assert "while they are still multiplied by the loss scale" in findings[0][2]


def test_a_norm_taken_before_unscale_and_clipped_with_after_it_is_amp006() -> None:
    """The gradients are unscaled by the clip, but the norm is the scaled one: the clip
    shrinks every gradient by the loss scale too much."""
    findings, lines, _model = _train("unscale between")
    assert [(code, line) for code, line, _ in findings] == [("AMP006", lines["clip"])]
    assert "get_total_norm()" in findings[0][2]


def test_a_scaled_norm_only_logged_is_not_a_finding() -> None:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logged = []
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=FP16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            logged.append(torch.nn.utils.get_total_norm(_grads(model)))
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.get_total_norm(_grads(model))
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, norm)
            scaler.step(optimizer)
            scaler.update()
    assert codes(seen.findings) == []
    assert len(logged) == 2


@pytest.mark.parametrize("keyword", [True, False])
def test_get_total_norm_error_if_nonfinite_with_a_scaler_is_amp018(keyword: bool) -> None:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=FP16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if keyword:
            line = here() + 1
            norm = torch.nn.utils.get_total_norm(_grads(model), error_if_nonfinite=True)
        else:
            line = here() + 1
            norm = torch.nn.utils.get_total_norm(_grads(model), 2.0, True)
        # foreach=True given positionally is not error_if_nonfinite.
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, norm, True)
        scaler.step(optimizer)
        scaler.update()
    assert [(f.code, f.line) for f in seen.findings] == [("AMP018", line)]
    assert "get_total_norm(..., error_if_nonfinite=True)" in seen.findings[0].message


def test_clip_grad_norm_is_still_one_clip() -> None:
    """torch's ``clip_grad_norm_`` calls the split halves itself: one finding of each kind,
    never a second one from inside torch."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=FP16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        line = here() + 1
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        scaler.step(optimizer)
        scaler.update()
    assert sorted((f.code, f.line, f.count) for f in seen.findings) == [
        ("AMP006", line, 1),
        ("AMP018", line, 1),
    ]


def test_split_clip_before_unscale_keeps_the_underflow_share_of_backward() -> None:
    """On a statistics step the gradients are measured before the split clip shrinks them
    (AMP104 must not advise a larger scale because of the user's clip)."""
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True, underflow_every=1) as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        for x, y in batches(3):
            with torch.autocast("cpu", dtype=FP16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            norm = torch.nn.utils.get_total_norm(_grads(model))
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1e-4, norm)
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        summary = ar.summary()
    assert codes(seen.findings) == ["AMP006"]
    assert summary is not None and summary["grad_underflow_share"] < 0.1
