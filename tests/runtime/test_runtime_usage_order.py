"""Blame lands on the iteration that made the mistake, and steps are counted from 0."""

from __future__ import annotations

import amplint.runtime as ar
import pytest
import torch
from runtime_helpers import batches, here, loss_of, tiny_model


def test_missing_update_with_unscale_clip_step_is_amp002_of_the_stepping_iteration(
    quiet: None,
) -> None:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = batches(2)
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        with pytest.raises(RuntimeError, match="after step"):
            for x, y in data:
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = loss_of(model, x, y)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                step_line = here() + 1
                scaler.step(optimizer)
                optimizer.zero_grad()  # ... and no scaler.update()
    assert [f.code for f in seen.findings] == ["AMP002"]
    (finding,) = seen.findings
    assert (finding.filename, finding.line, finding.first_step) == (__file__, step_line, 0)
    # Said as it happened: the next unscale_ is what raised, not a second step.
    assert "not followed by scaler.update()" in finding.message
    assert "unscale_() of the optimizer raises" in finding.message


def test_unscale_after_step_in_the_same_iteration_stays_amp011(quiet: None) -> None:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        with pytest.raises(RuntimeError, match="after step"):
            scaler.unscale_(optimizer)
    assert [f.code for f in seen.findings] == ["AMP011"]


def test_first_step_is_the_zero_based_iteration_for_every_code(quiet: None) -> None:
    """AMP003 and AMP004 in iteration 0 say 0; a mistake first made in iteration 2 says 2."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as seen:
        for x, y in batches(3):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            amp003_line = here() + 1
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert [(f.code, f.line, f.first_step) for f in seen.findings] == [("AMP003", amp003_line, 0)]
    ar.reset()
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        for i, (x, y) in enumerate(batches(4)):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            if i < 2:
                scaler.step(optimizer)
                scaler.update()
            else:
                amp004_line = here() + 1
                optimizer.step()
            optimizer.zero_grad()
    assert [(f.code, f.line, f.first_step) for f in seen.findings] == [("AMP004", amp004_line, 2)]


def test_missing_update_of_one_of_two_scalers_blames_the_step_that_lacked_it(
    quiet: None,
) -> None:
    """A GAN whose discriminator's scaler never updates: torch raises at the next
    iteration's step; the finding is the first iteration's step, at step 0."""
    torch.manual_seed(0)
    gen, disc = tiny_model(1), torch.nn.Sequential(torch.nn.Linear(4, 1))
    opt_g = torch.optim.SGD(gen.parameters(), lr=0.05)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.05)
    with ar.checking() as seen:
        scaler_g, scaler_d = torch.amp.GradScaler("cpu"), torch.amp.GradScaler("cpu")
        with pytest.raises(RuntimeError, match="step"):
            for x, _ in batches(3):
                opt_d.zero_grad()
                with torch.autocast("cpu", dtype=torch.float16):
                    fake = gen(x)
                    loss_d = disc(fake.detach()).float().mean()
                scaler_d.scale(loss_d).backward()
                step_line = here() + 1
                scaler_d.step(opt_d)  # ... and no scaler_d.update()
                opt_g.zero_grad()
                with torch.autocast("cpu", dtype=torch.float16):
                    loss_g = -disc(fake).float().mean()
                scaler_g.scale(loss_g).backward()
                scaler_g.step(opt_g)
                scaler_g.update()
    (finding,) = seen.findings
    assert (finding.code, finding.line, finding.first_step) == ("AMP002", step_line, 0)
    assert "the next iteration's scaler.step() of the optimizer raises" in finding.message
