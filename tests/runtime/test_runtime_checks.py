"""Each runtime check fires on real CPU training, naming this file and the offending line."""

from __future__ import annotations

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime.session import SESSION
from runtime_helpers import batches, codes, here, loss_of, tiny_model
from torch import nn

pytestmark = pytest.mark.usefixtures("quiet")


def only(findings: list[ar.Finding], code: str) -> ar.Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


def assert_at(findings: list[ar.Finding], code: str, line: int) -> ar.Finding:
    finding = only(findings, code)
    assert (finding.filename, finding.line) == (__file__, line), finding
    return finding


def test_amp001_backward_inside_autocast() -> None:
    model = tiny_model()
    with ar.checking() as chk:
        for x, y in batches(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_of(model, x, y)
                line = here() + 1
                loss.backward()
    finding = assert_at(chk.findings, "AMP001", line)
    assert finding.count == 2
    assert "out of the `with autocast" in finding.message


def test_amp001_autograd_grad_inside_autocast() -> None:
    model = tiny_model()
    x, y = batches(1)[0]
    with ar.checking() as chk, torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_of(model, x, y)
        line = here() + 1
        torch.autograd.grad(loss, list(model.parameters()))
    assert_at(chk.findings, "AMP001", line)


def test_amp002_second_step_without_update_reported_before_torch_raises() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        with pytest.warns(ar.AmpWarning) as warned, pytest.raises(RuntimeError, match="step"):
            line = here() + 1
            scaler.step(opt)
        # torch refused the second step before any step ran: one optimizer step in all.
        assert SESSION.history.steps.latest == 1
    assert_at(chk.findings, "AMP002", line)
    assert warned[0].message.code == "AMP002"


def test_amp002_raise_mode_carries_code_and_torch_message() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking("raise"):
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        with pytest.raises(ar.AmpUsageError) as excinfo:
            scaler.step(opt)
    assert excinfo.value.code == "AMP002"
    assert "step() has already been called since the last update()" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, RuntimeError)


def test_amp003_float16_autocast_without_scaler() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        for x, y in batches(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            line = here() + 1
            loss.backward()
            opt.step()
    assert_at(chk.findings, "AMP003", line)


def test_amp003_silent_when_the_float16_forward_runs_without_grad() -> None:
    """A linear probe: a frozen backbone's features under float16 autocast and no_grad,
    a float32 head trained on them; no float16 graph is back-propagated."""
    backbone, head = tiny_model(), nn.Linear(4, 4)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    with ar.checking() as chk:
        for x, y in batches(3):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
                features = backbone(x).float()
            loss = nn.functional.mse_loss(head(features), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert chk.findings == []


def test_amp003_silent_when_the_float16_forward_is_not_the_one_trained() -> None:
    """An evaluation under float16 autocast left with grad on, between float32 steps: the
    graph back-propagated holds no float16 op."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        for x, y in batches(3):
            with torch.autocast("cpu", dtype=torch.float16):
                model(x)  # a metric, grad left on
            loss = loss_of(model, x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert chk.findings == []


def test_amp004_optimizer_step_on_scaled_gradients() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            line = here() + 1
            opt.step()
    assert codes(chk.findings) == ["AMP004"]
    assert_at(chk.findings, "AMP004", line)


def _two_models(scaled_second: bool) -> tuple[list[ar.Finding], int]:
    """One scaler steps the first model; the second optimizer is stepped directly after a
    backward of its own loss, scaled by the same scaler or not."""
    first, second = tiny_model(), tiny_model()
    opt_first = torch.optim.SGD(first.parameters(), lr=0.1)
    opt_second = torch.optim.SGD(second.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt_first.zero_grad()
            opt_second.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss_first = loss_of(first, x, y)
            loss_second = loss_of(second, x, y)
            scaler.scale(loss_first).backward()
            scaler.step(opt_first)
            (scaler.scale(loss_second) if scaled_second else loss_second).backward()
            line = here() + 1
            opt_second.step()
            scaler.update()
    return chk.findings, line


def test_amp004_second_optimizer_stepped_directly_on_the_same_scalers_gradients() -> None:
    # PyTorch's recipe for several models uses one scaler for both optimizers; stepping
    # the second directly applies gradients multiplied by the scale.
    findings, line = _two_models(scaled_second=True)
    assert codes(findings) == ["AMP004"]
    assert_at(findings, "AMP004", line)
    # An unrelated float32 model trained beside it with a plain backward: no finding.
    findings, _ = _two_models(scaled_second=False)
    assert codes(findings) == []


def test_amp005_unscaled_backward_stepped_through_scaler() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaled = scaler.scale(loss)  # noqa: F841 - the bug: backward on the wrong name
            line = here() + 1
            loss.backward()
            scaler.step(opt)
            scaler.update()
    assert codes(chk.findings) == ["AMP005"]
    assert assert_at(chk.findings, "AMP005", line).count == 2


def test_amp005_reported_before_torchs_assertion_without_any_scale() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        line = here() + 1
        loss_of(model, x, y).backward()
        with pytest.raises(AssertionError, match=r"did not use scaler\.scale"):
            scaler.step(opt)
    assert_at(chk.findings, "AMP005", line)


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_amp006_clip_before_unscale(clip: str) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            if clip == "norm":
                line = here() + 1
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            else:
                line = here() + 1
                torch.nn.utils.clip_grad.clip_grad_value_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
    assert codes(chk.findings) == ["AMP006"]
    assert_at(chk.findings, "AMP006", line)


@pytest.mark.parametrize("spelled", ["positional", "keyword", "value"])
def test_amp006_not_reported_for_a_clip_that_only_measures(spelled: str) -> None:
    """``clip_grad_norm_(params, float("inf"))`` returns the norm and changes nothing: a
    loop that logs the scaled norm before stepping clips nothing (IDIOMS: not AMP006)."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            if spelled == "positional":
                torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            elif spelled == "keyword":
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf"))
            else:
                torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=float("inf"))
            scaler.step(opt)
            scaler.update()
    assert codes(chk.findings) == []


def test_amp007_deprecated_constructors() -> None:
    with ar.checking() as chk:
        with pytest.warns(FutureWarning, match=r"torch.amp.GradScaler\('cpu'"):
            scaler_line = here() + 1
            scaler = torch.cpu.amp.GradScaler()
        with pytest.warns(FutureWarning):
            autocast_line = here() + 1
            region = torch.cpu.amp.autocast(dtype=torch.bfloat16)
    assert isinstance(scaler, ar.GradScaler) and scaler._device == "cpu"
    assert isinstance(region, ar.autocast) and region.device == "cpu"
    found = [(f.code, f.line) for f in chk.findings]
    assert found == [("AMP007", scaler_line), ("AMP007", autocast_line)]
    assert "torch.amp.autocast('cpu'" in chk.findings[1].message


def test_amp008_device_with_index() -> None:
    with ar.checking() as chk:
        line = here() + 1
        torch.autocast("cuda:0")
        with pytest.raises(ValueError, match="device_type"):
            device_line = here() + 1
            torch.autocast(torch.device("cpu"))  # type: ignore[arg-type]
    assert [(f.code, f.line) for f in chk.findings] == [("AMP008", line), ("AMP008", device_line)]


def test_amp009_half_parameters() -> None:
    model = tiny_model().half()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        loss = loss_of(model, x.half(), y)
        scaler.scale(loss).backward()
        with pytest.raises(ValueError, match="FP16 gradients"):
            line = here() + 1
            scaler.step(opt)
    assert_at(chk.findings, "AMP009", line)


def test_amp010_scaler_recreated_every_step() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        for x, y in batches(4):
            line = here() + 1
            scaler = torch.amp.GradScaler("cpu")
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert codes(chk.findings) == ["AMP010"]
    # What the user can count: 4 scalers, the first re-created in iteration 1 (0-based),
    # then in iterations 2 and 3: the pattern is known at the third construction only.
    finding = assert_at(chk.findings, "AMP010", line)
    assert (finding.count, finding.first_step) == (3, 1)


def test_amp010_not_for_a_sweep_of_long_runs() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        for _run in range(3):
            scaler = torch.amp.GradScaler("cpu")
            for x, y in batches(3):
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = loss_of(model, x, y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
    assert chk.findings == []


@pytest.mark.parametrize("order", ["twice", "after_step"])
def test_amp011_unscale_twice_or_after_step(order: str) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        if order == "twice":
            scaler.unscale_(opt)
            expected = "already been called"
        else:
            scaler.step(opt)
            expected = "after step"
        with pytest.raises(RuntimeError, match=expected):
            line = here() + 1
            scaler.unscale_(opt)
    finding = assert_at(chk.findings, "AMP011", line)
    assert ("twice" if order == "twice" else "after scaler.step()") in finding.message


def test_amp012_step_and_update_inside_autocast_but_not_zero_grad() -> None:
    """zero_grad() computes nothing: harmless inside autocast, not reported (as statically)."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        with torch.autocast("cpu", dtype=torch.float16):
            step_line = here() + 1
            scaler.step(opt)
            update_line = here() + 1
            scaler.update()
            opt.zero_grad()
    assert [(f.code, f.line) for f in chk.findings] == [
        ("AMP012", step_line),
        ("AMP012", update_line),
    ]


def test_steps_after_a_backward_in_the_same_region_are_left_to_amp001() -> None:
    """The whole iteration inside one region: one mistake, reported once (AMP001, whose fix
    moves the backward and the steps after it); a later region with only a step is AMP012."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            with torch.autocast("cpu", dtype=torch.float16):
                opt.zero_grad()
                loss = loss_of(model, x, y)
                backward_line = here() + 1
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        with torch.autocast("cpu", dtype=torch.float16):
            step_line = here() + 1
            scaler.step(opt)
        scaler.update()
    assert [(f.code, f.line) for f in chk.findings] == [
        ("AMP001", backward_line),
        ("AMP012", step_line),
    ]


def test_amp013_state_dict_mid_iteration() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        line = here() + 1
        scaler.state_dict()
        scaler.update()
        scaler.state_dict()
    assert assert_at(chk.findings, "AMP013", line).count == 1


def test_amp013_silent_for_a_checkpoint_taken_after_unscale_before_step() -> None:
    """Taken around the clip: the model, the optimizer and the scale all predate the step."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            checkpoint = {"model": model.state_dict(), "scaler": scaler.state_dict()}
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    assert checkpoint["scaler"]["scale"] == 65536.0
    assert chk.findings == []


def test_amp014_scaler_with_only_bfloat16() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        line = here() + 1
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert codes(chk.findings) == ["AMP014"]
    assert_at(chk.findings, "AMP014", line)


def _accumulate(
    zero: str, *, every: int = 3, micro_batches: int = 7, step_each: bool = True
) -> list[ar.Finding]:
    """Gradient accumulation over ``every`` micro-batches, zeroing the gradients with
    ``zero`` at the boundary; ``step_each``: the scaler's calls run every micro-batch."""
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for i, (x, y) in enumerate(batches(micro_batches)):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y) / every
            scaler.scale(loss).backward()
            boundary = (i + 1) % every == 0
            if step_each or boundary:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
            if boundary:
                if zero == "optimizer":
                    opt.zero_grad()
                elif zero == "module":
                    model.zero_grad(set_to_none=False)
                elif zero == "in-place":  # the same tensors, zeroed where they are
                    for param in model.parameters():
                        param.grad.zero_()
                elif zero == "foreach":
                    torch._foreach_zero_([param.grad for param in model.parameters()])
                else:  # by hand, as fairseq and apex do
                    for param in model.parameters():
                        param.grad = None
    return chk.findings


ZEROING = ["optimizer", "module", "none-by-hand", "in-place", "foreach"]


@pytest.mark.parametrize("zero", ZEROING)
def test_amp016_scaler_calls_every_micro_batch_of_an_accumulation(zero: str) -> None:
    findings = _accumulate(zero)
    (finding,) = findings
    assert finding.code == "AMP016" and finding.first_step == 1
    # Micro-batches 1, 2, 4, 5 (0-based) step gradients the previous step applied already.
    assert finding.count == 4


@pytest.mark.parametrize("zero", ZEROING)
def test_amp016_silent_when_the_scaler_calls_sit_at_the_boundary(zero: str) -> None:
    assert _accumulate(zero, step_each=False) == []


def test_amp016_silent_for_a_gan_whose_models_zero_in_turn() -> None:
    """Two models, one scaler (PyTorch's recipe): each optimizer's gradients are zeroed
    before its own backward, never right after the other's step."""
    torch.manual_seed(0)
    gen, disc = tiny_model(1), nn.Sequential(nn.Linear(4, 1))
    opt_g = torch.optim.SGD(gen.parameters(), lr=0.05)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.05)
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        for x, _ in batches(4):
            with torch.autocast("cpu", dtype=torch.float16):
                fake = gen(x)
                loss_d = disc(fake.detach()).float().mean()
            disc.zero_grad()
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)
            with torch.autocast("cpu", dtype=torch.float16):
                loss_g = -disc(fake).float().mean()
            gen.zero_grad()
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)
            scaler.update()
    assert chk.findings == []


def test_amp017_scaler_defaulting_to_cuda_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with ar.checking() as chk, pytest.warns(UserWarning, match="CUDA is not available"):
        line = here() + 1
        scaler = torch.amp.GradScaler()
    assert not scaler.is_enabled()
    assert_at(chk.findings, "AMP017", line)
    # timm passes the device explicitly: the message does not call it a default.
    with ar.checking() as chk, pytest.warns(UserWarning, match="CUDA is not available"):
        torch.amp.GradScaler(device="cuda")
    (finding,) = chk.findings
    assert "this GradScaler for device 'cuda' never scales" in finding.message
    assert "default" not in finding.message.split(";")[0]


def test_amp017_autocast_with_unsupported_dtype() -> None:
    with ar.checking() as chk, pytest.warns(UserWarning, match="Disabling autocast"):
        line = here() + 1
        region = torch.autocast("cpu", dtype=torch.float32)
    assert not region._enabled
    assert_at(chk.findings, "AMP017", line)


@pytest.mark.parametrize("positional", [False, True])
def test_amp018_error_if_nonfinite_with_scaler(positional: bool) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        if positional:
            line = here() + 1
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, 2.0, True)
        else:
            line = here() + 1
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, 2.0, False)
        scaler.step(opt)
        scaler.update()
    assert codes(chk.findings) == ["AMP018"]
    assert_at(chk.findings, "AMP018", line)


def test_amp019_closure_with_scaler() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with ar.checking() as chk:
        scaler = torch.amp.GradScaler("cpu")
        scaler.scale(loss_of(model, x, y)).backward()
        with pytest.raises(RuntimeError, match="Closure"):
            line = here() + 1
            scaler.step(opt, closure=lambda: loss_of(model, x, y))
    assert_at(chk.findings, "AMP019", line)
