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


def _gan(iterations: int, mistake_at: int, extra_scaler: bool = False) -> list[ar.Finding]:
    """A GAN: the discriminator's half (its scaler steps), then the generator's half, whose
    backward runs inside autocast at iteration ``mistake_at`` only (AMP001)."""
    torch.manual_seed(0)
    generator, discriminator = tiny_model(), tiny_model()
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.01)
    with ar.checking() as seen:
        scaler_g = torch.amp.GradScaler("cpu")
        scaler_d = torch.amp.GradScaler("cpu")
        unused = torch.amp.GradScaler("cpu") if extra_scaler else None
        for i, (x, y) in enumerate(batches(iterations)):
            with torch.autocast("cpu", dtype=torch.float16):
                loss_d = loss_of(discriminator, x, y)
            scaler_d.scale(loss_d).backward()
            scaler_d.step(opt_d)
            scaler_d.update()
            opt_d.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss_g = loss_of(generator, x, y)
                if i == mistake_at:
                    scaler_g.scale(loss_g).backward()
            if i != mistake_at:
                scaler_g.scale(loss_g).backward()
            scaler_g.step(opt_g)
            scaler_g.update()
            opt_g.zero_grad()
        del unused
    return seen.findings


@pytest.mark.parametrize("mistake_at", [0, 2])
def test_the_second_scalers_half_of_a_gan_iteration_has_the_iterations_number(
    quiet: None, mistake_at: int
) -> None:
    """The generator's half follows the discriminator's step in the same iteration: a
    mistake there is numbered by its iteration, in the first iteration too."""
    findings = _gan(4, mistake_at)
    assert [(f.code, f.first_step) for f in findings] == [("AMP001", mistake_at)]


def test_a_scaler_that_never_steps_does_not_hold_the_count_back(quiet: None) -> None:
    """A scaler built and never used: the generator's mistake at iteration 3 is still 3."""
    findings = _gan(5, 3, extra_scaler=True)
    assert [(f.code, f.first_step) for f in findings] == [("AMP001", 3)]


def test_a_scaler_rebuilt_every_iteration_counts_every_iteration(quiet: None) -> None:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    kept = []
    with ar.checking() as seen:
        for i, (x, y) in enumerate(batches(4)):
            scaler = torch.amp.GradScaler("cpu")
            kept.append(scaler)  # all alive: none is waited for after its step
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
                if i == 2:
                    scaler.scale(loss).backward()
            if i != 2:
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    assert [(f.code, f.first_step) for f in seen.findings if f.code == "AMP001"] == [("AMP001", 2)]


def test_a_scaler_built_and_never_used_lets_a_plain_loop_count_its_iterations(
    quiet: None,
) -> None:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")  # built, then the loop trains without it
        for i, (x, y) in enumerate(batches(5)):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
                if i == 3:
                    loss.backward()
            if i != 3:
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        del scaler
    assert [(f.code, f.first_step) for f in seen.findings if f.code == "AMP001"] == [("AMP001", 3)]


def test_a_scaler_rebuilt_every_step_leaves_a_bounded_record(quiet: None) -> None:
    """AMP016's per-step records: one per scaler and optimizer, those of scalers no longer
    in use dropped, so a loop that rebuilds its scaler (AMP010) holds a bounded number."""
    from amplint.runtime.state import thread_state

    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batches(1)[0]
    with ar.checking():
        for _ in range(150):
            scaler = torch.amp.GradScaler("cpu")
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        assert 0 < len(thread_state().after_steps) <= 65
