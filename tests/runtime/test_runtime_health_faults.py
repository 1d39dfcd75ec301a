"""Numerical health (AMP101-AMP107): faults injected into real small CPU training runs.

Each run trains a small nested model with float16 CPU autocast and GradScaler("cpu"); a
fault is switched on at a chosen step and the finding must name that step (the 0-based
optimizer step, i.e. the loop index here) and, for AMP105, the module.
"""

from __future__ import annotations

import copy
import math
import os
import random
import sys
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime import health
from amplint.runtime.reporting import internal_errors
from amplint.runtime.summary_text import format_health_summary
from runtime_helpers import Offset, clamp_float16, here
from torch import nn

pytestmark = pytest.mark.usefixtures("quiet")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only contend (seconds per run on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


INF = float("inf")


class Amplify(nn.Module):
    """Multiplies by ``factor`` (1 when healthy): the fault switch for AMP105."""

    def __init__(self) -> None:
        super().__init__()
        self.factor = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Shift(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


class Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = nn.GELU()
        self.boost = Amplify()
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.boost(self.act(self.fc1(x))))


class Layer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = Mlp(width)
        self.shift = Shift()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift(x + self.mlp(self.norm(x)))


class Encoder(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Net(nn.Module):
    def __init__(self, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.encoder = Encoder(width, depth)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)))


Fault = Callable[[int, Net], None]


def train(
    steps: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    fault: Fault | None = None,
    loss_fault: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    grad_fault: Callable[[int, Net], None] | None = None,
    init_scale: float = 2.0**10,
    unscale: bool = False,
    scheduler: bool = False,
    growth_interval: int = 4,
    fused: bool = False,
) -> tuple[Net, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10) if scheduler else None
    scaler = torch.amp.GradScaler(
        "cpu",
        init_scale=init_scale,
        growth_interval=growth_interval,
        enabled=dtype is torch.float16,
    )
    generator = torch.Generator().manual_seed(seed + 100)
    for step in range(steps):
        if fault is not None:
            fault(step, model)
        x = torch.randn(6, 8, generator=generator)
        y = torch.randn(6, 4, generator=generator)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype):
            loss = nn.functional.mse_loss(model(x).float(), y)
        if loss_fault is not None:
            loss = loss_fault(step, loss)
        scaler.scale(loss).backward()
        if grad_fault is not None:
            grad_fault(step, model)
        if unscale:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if unscale and grad_fault is not None:
            grad_fault(-step - 1, model)  # after unscale_: the AMP106 hook point
        scaler.step(opt)
        scaler.update()
        if sched is not None:
            sched.step()
    return model, [p.detach().clone() for p in model.parameters()]


def found(code: str) -> list[ar.Finding]:
    return [finding for finding in ar.report() if finding.code == code]


def _float16_loss(model: Net) -> torch.Tensor:
    """A float16 forward of a fresh batch, and its loss (the loops written out below)."""
    with torch.autocast("cpu", dtype=torch.float16):
        return nn.functional.mse_loss(model(torch.randn(6, 8)).float(), torch.zeros(6, 4))


def _scaled_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: Any) -> None:
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


# AMP105: the overflow locator ----------------------------------------------------------


@pytest.mark.parametrize(("layer", "at"), [(2, 7), (0, 3), (3, 11)])
def test_overflowing_module_is_named_with_its_step(layer: int, at: int) -> None:
    def fault(step: int, model: Net) -> None:
        model.encoder.layers[layer].mlp.boost.factor = 1e6 if step == at else 1.0

    with ar.checking("warn", health=True):
        train(at + 5, fault=fault)
        (finding,) = found("AMP105")
    assert finding.first_step == at
    assert f"`encoder.layers.{layer}.mlp.boost` (Amplify)" in finding.message
    assert "autocast" in finding.message and "bfloat16" in finding.message
    assert finding.filename == __file__
    summary = ar.summary()
    assert summary is not None
    assert summary["first_overflow"]["module"] == f"encoder.layers.{layer}.mlp.boost"
    assert summary["first_overflow"]["step"] == at
    # The overflow made the loss non-finite at the same step.
    (loss,) = found("AMP101")
    assert loss.first_step == at


@pytest.mark.parametrize("at", [4, 0])
def test_overflow_in_the_step_a_script_stops_on_its_nonfinite_loss_is_reported(at: int) -> None:
    # MAE, DeiT and DINO check the loss before scale() and exit: no update() closed that
    # step, and its float16 outputs are read when the run is reported (also in the first
    # step, before any scale(): then at the forward's line).
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(10):
            model.encoder.layers[1].mlp.boost.factor = 1e6 if step == at else 1.0
            loss = _float16_loss(model)
            if not math.isfinite(loss.item()):
                break
            _scaled_step(loss, opt, scaler)
        summary = ar.summary()
        (finding,) = found("AMP105")
    assert step == at
    assert finding.first_step == at
    assert "`encoder.layers.1.mlp.boost` (Amplify) was inf" in finding.message
    assert summary is not None and summary["first_overflow"]["step"] == at
    assert finding.filename == __file__


def test_nan_in_the_data_is_no_overflow_of_the_first_module() -> None:
    """A batch with a NaN feature makes the loss NaN (AMP101), but no float16 module
    overflowed: the first one was given the NaN. Not AMP105, whose advice (run that module
    in float32) would be wrong; an overflow in a later step is still named."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(12):
            x = torch.randn(6, 8)
            if step in (2, 5):
                x[1, 3] = float("nan")
            model.encoder.layers[1].mlp.boost.factor = 1e6 if step == 9 else 1.0
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.mse_loss(model(x).float(), torch.zeros(6, 4))
            _scaled_step(loss, opt, scaler)
        (nonfinite,) = found("AMP101")
        overflows = found("AMP105")
    assert nonfinite.first_step == 2
    assert [(f.first_step, "`encoder.layers.1.mlp.boost`" in f.message) for f in overflows] == [
        (9, True)
    ]


def test_a_gan_stopped_in_its_generators_half_is_numbered_by_its_iteration() -> None:
    # Two scalers: the discriminator's updated in this iteration before the generator's
    # forward overflowed and the script stopped.
    torch.manual_seed(0)
    disc, gen = Net(), Net()
    opt_d = torch.optim.SGD(disc.parameters(), lr=1e-2)
    opt_g = torch.optim.SGD(gen.parameters(), lr=1e-2)
    with ar.checking("warn", health=True):
        scaler_d = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        scaler_g = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(6):
            _scaled_step(_float16_loss(disc), opt_d, scaler_d)
            gen.encoder.layers[0].mlp.boost.factor = 1e6 if step == 3 else 1.0
            loss = _float16_loss(gen)
            if not math.isfinite(loss.item()):
                break
            _scaled_step(loss, opt_g, scaler_g)
        (finding,) = found("AMP105")
    assert finding.first_step == 3


def test_a_teacher_run_without_grad_inside_the_students_autocast_is_measured() -> None:
    # DeiT's distillation: the teacher's forward runs under no_grad in the student's step.
    at = 3
    torch.manual_seed(0)
    student, teacher = Net(), Net()
    opt = torch.optim.SGD(student.parameters(), lr=1e-2)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(at + 3):
            teacher.encoder.layers[2].mlp.boost.factor = 1e6 if step == at else 1.0
            x = torch.randn(6, 8)
            with torch.autocast("cpu", dtype=torch.float16):
                with torch.no_grad():
                    target = teacher(x).float()
                loss = nn.functional.mse_loss(student(x).float(), target)
            _scaled_step(loss, opt, scaler)
        # An evaluation without grad outside autocast is no training step: not measured.
        with torch.no_grad():
            teacher.half()(torch.full((2, 8), 1e4, dtype=torch.float16))
        (finding,) = found("AMP105")
    assert finding.first_step == at
    assert "`teacher.encoder.layers.2.mlp.boost` (Amplify) was inf" in finding.message


def test_an_overflow_points_at_the_line_that_ran_the_forward_of_its_step() -> None:
    """Not at a scale() line of another branch: the forward's own line, where the outermost
    module was called (the model's own forward lines are not where it was run from)."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            bump = 4e4 if step == 2 else 0.0
            with torch.no_grad():
                model.embed.bias.add_(bump)
            with torch.autocast("cpu", dtype=torch.float16):
                forward_line = here() + 1
                loss = model(torch.randn(6, 8)).float().pow(2).mean()
            with torch.no_grad():
                model.embed.bias.sub_(bump)
            opt.zero_grad()
            if step == 2:
                scaler.scale(loss).backward()
            else:
                scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        (finding,) = found("AMP105")
    assert (finding.filename, finding.line, finding.first_step) == (__file__, forward_line, 2)
    assert "`embed` (Linear) reached" in finding.message


class _MaskedHead(nn.Module):
    """Logits of the classes not allowed filled with a mask value (HF's finfo.min)."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 6)
        self.fill = fill

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x)
        allowed = torch.tensor([True] * 4 + [False] * 2)
        fill = torch.finfo(logits.dtype).min if self.fill == 0 else self.fill
        return logits.masked_fill(~allowed, fill)


@pytest.mark.parametrize("fill", [0.0, -math.inf])
def test_a_mask_value_written_on_purpose_is_no_overflow(fill: float) -> None:
    torch.manual_seed(0)
    head = _MaskedHead(fill)
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**9)
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.float16):
                logits = head(torch.randn(16, 8))
            loss = nn.functional.cross_entropy(logits.float(), torch.randint(0, 4, (16,)))
            _scaled_step(loss, opt, scaler)
        assert found("AMP105") == []
        summary = ar.summary()
    assert summary is not None and summary["first_overflow"] is None
    # The positive side is what the output's magnitude is then.
    (entry,) = summary["closest_to_overflow"][:1]
    assert 0 < entry["max_abs"] < 100


def test_an_evaluation_between_steps_is_not_a_training_step() -> None:
    # An evaluation under no_grad and autocast every few steps (YOLOX's EMA evaluation,
    # torchvision's): an overflow there is no overflow of the training step that follows.
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(6):
            loss = _float16_loss(model)
            _scaled_step(loss, opt, scaler)
            if step == 3:
                model.eval()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
                    model(torch.full((2, 8), 1e6))
                with torch.autocast("cpu", dtype=torch.float16), torch.no_grad():
                    model(torch.full((2, 8), 1e6))
                # timm's validate(): inference mode, whose tensors have no version counter.
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
                    model(torch.full((2, 8), 1e6))
                model.train()
        assert found("AMP105") == []
        summary = ar.summary()
        assert internal_errors() == []
    assert summary is not None and summary["first_overflow"] is None


def test_a_nonfinite_loss_among_several_scaled_in_a_step_names_every_scaling_line() -> None:
    # PyTorch's recipe for several losses: one scaler, a scale() per loss; the health
    # checks see their sum, so the message names each line that scaled one.
    torch.manual_seed(0)
    first, second = Net(), Net()
    opt = torch.optim.SGD([*first.parameters(), *second.parameters()], lr=1e-2)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            loss_first, loss_second = _float16_loss(first), _float16_loss(second)
            if step == 2:
                loss_second = loss_second * math.nan
            opt.zero_grad()
            scaler.scale(loss_first).backward(retain_graph=True)
            lines = [sys._getframe().f_lineno - 1]
            scaler.scale(loss_second).backward()
            lines.append(sys._getframe().f_lineno - 1)
            scaler.step(opt)
            scaler.update()
        (finding,) = found("AMP101")
    assert finding.first_step == 2
    name = os.path.basename(__file__)
    assert f"scaled at {name}:{lines[0]}, {name}:{lines[1]}." in finding.message


class _Residual(nn.Module):
    """ResNet's block ending: the last child's output, changed in place, is returned."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.boost = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        out += x * self.boost
        return out


class _BodyAndHead(nn.Module):
    """A model whose parts the loop calls one by one (a LightningModule's training_step)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 8), Amplify())
        self.head = nn.Sequential(nn.Linear(8, 8), Amplify(), nn.Linear(8, 4))


def test_parts_of_a_model_never_called_whole_are_named_through_the_model() -> None:
    torch.manual_seed(0)
    model = _BodyAndHead()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            model.head[1].factor = 1e6 if step == 2 else 1.0
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model.head(model.body(torch.randn(6, 8))).float().pow(2).mean()
            _scaled_step(loss, opt, scaler)
        (finding,) = found("AMP105")
    assert "`model.head.1` (Amplify) was inf" in finding.message


@pytest.mark.parametrize("direct", [False, True])
def test_a_position_in_a_sequential_and_a_module_called_alone_are_named_by_variable(
    direct: bool,
) -> None:
    """``1`` and ``<root Amplify>`` say little: ``net.1``, ``booster``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), Amplify(), nn.Linear(8, 4))
    booster = Amplify()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            (booster if direct else net[1]).factor = 1e6 if step == 2 else 1.0
            with torch.autocast("cpu", dtype=torch.float16):
                loss = net(booster(net[0](torch.randn(6, 8))) if direct else torch.randn(6, 8))
                loss = loss.float().pow(2).mean()
            _scaled_step(loss, opt, scaler)
        (finding,) = found("AMP105")
    name = "booster" if direct else "net.1"
    assert f"`{name}` (Amplify) was inf" in finding.message


def test_an_output_changed_in_place_after_it_was_measured_is_measured_again() -> None:
    torch.manual_seed(0)
    block, head = _Residual(), nn.Linear(8, 4)
    opt = torch.optim.SGD([*block.parameters(), *head.parameters()], lr=1e-3)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            block.boost = 1e6 if step == 2 else 1.0
            with torch.autocast("cpu", dtype=torch.float16):
                loss = head(block(torch.randn(6, 8))).float().pow(2).mean()
            _scaled_step(loss, opt, scaler)
        (finding,) = found("AMP105")
    assert "(_Residual) was inf" in finding.message and finding.first_step == 2


def test_a_frozen_backbone_run_without_grad_is_blamed_before_the_head_it_feeds() -> None:
    torch.manual_seed(0)
    backbone, head = Net(), nn.Linear(4, 4)
    opt = torch.optim.SGD(head.parameters(), lr=1e-3)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            backbone.encoder.layers[0].mlp.boost.factor = 1e6 if step == 2 else 1.0
            with torch.autocast("cpu", dtype=torch.float16):
                with torch.no_grad():
                    features = backbone(torch.randn(6, 8))
                loss = head(features).float().pow(2).mean()
            _scaled_step(loss, opt, scaler)
        (finding,) = found("AMP105")
    assert "`encoder.layers.0.mlp.boost` (Amplify) was inf" in finding.message


class _Distiller:
    """A trainer holding its student and a deep-copied teacher as attributes (DINO, MoCo)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.student = Net()
        self.teacher = copy.deepcopy(self.student)
        self.opt = torch.optim.SGD(self.student.parameters(), lr=1e-2)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)

    def step(self, boost: float) -> None:
        self.teacher.encoder.layers[1].mlp.boost.factor = boost
        x = torch.randn(6, 8)
        with torch.autocast("cpu", dtype=torch.float16):
            with torch.no_grad():
                target = self.teacher(x).float()
            loss = nn.functional.mse_loss(self.student(x).float(), target)
        self.opt.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()


def test_a_module_named_alike_in_two_models_is_named_with_the_model() -> None:
    # A student and its deep-copied teacher: `encoder.layers.1.mlp.boost` is in both.
    with ar.checking("warn", health=True):
        trainer = _Distiller()
        for step in range(5):
            trainer.step(1e6 if step == 2 else 1.0)
        (finding,) = found("AMP105")
    assert "`self.teacher.encoder.layers.1.mlp.boost` (Amplify) was inf" in finding.message
    assert finding.first_step == 2


class _PatchEmbed(nn.Module):
    """ViT's patch embedding: a conv whose output the parent returns flattened (a view)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def test_a_parent_returning_a_view_of_its_childs_output_is_not_measured_again() -> None:
    torch.manual_seed(0)
    embed, head = _PatchEmbed(), nn.Linear(8, 2)
    params = [*embed.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=1e-3)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(4):
            x = torch.randn(2, 3, 8, 8) * (1e6 if step == 2 else 1.0)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = head(embed(x)).float().pow(2).mean()
            _scaled_step(loss, opt, scaler)
        summary = ar.summary()
        (finding,) = found("AMP105")
    assert "`proj` (Conv2d) was" in finding.message and finding.first_step == 2
    assert summary is not None
    named = [entry["module"] for entry in summary["closest_to_overflow"]]
    assert "proj" in named and "<root _PatchEmbed>" not in named and len(set(named)) == len(named)


def test_output_within_the_margin_of_65504_is_reported_before_it_overflows() -> None:
    at = 5

    def fault(step: int, model: Net) -> None:
        model.encoder.layers[1].shift.offset = 40000.0 if step >= at else 0.0

    with ar.checking("warn", health=True):
        train(at + 3, fault=fault)
        (finding,) = found("AMP105")
    assert finding.first_step == at
    assert "`encoder.layers.1.shift` (Shift) reached 40000" in finding.message
    # A narrower margin (limit 65504 * 0.75 = 49128) lets the same output through.
    ar.reset()
    with ar.checking("warn", health=True, overflow_margin=0.25):
        train(at + 3, fault=fault)
        assert found("AMP105") == []


# AMP105's sampling: which iterations are measured ------------------------------------


def _near_overflow_from(at: int, until: int | None = None) -> Fault:
    """Layer 1's output at 40000 (finite, within the margin), taken back by layer 2: the
    loss and the gradients stay finite, and no step is skipped."""

    def fault(step: int, model: Net) -> None:
        hit = step >= at and (until is None or step <= until)
        model.encoder.layers[1].shift.offset = 40000.0 if hit else 0.0
        model.encoder.layers[2].shift.offset = -40000.0 if hit else 0.0

    return fault


def test_after_the_first_iterations_one_in_every_is_measured() -> None:
    # Measured: 0 and 1 (activations_first=2), then 4 and 8 (one in 4).
    with ar.checking("warn", health=True, activations_first=2, activations_every=4):
        train(11, fault=_near_overflow_from(5), growth_interval=1000, init_scale=16.0)
        (finding,) = found("AMP105")
        summary = ar.summary()
    assert finding.first_step == 8
    assert "`encoder.layers.1.shift` (Shift) reached 40000" in finding.message
    assert summary is not None
    assert summary["activation_iterations_measured"] == 4
    assert summary["activation_iterations"] == 11
    # The same near-overflow on iterations 5-7 only falls between measured iterations.
    ar.reset()
    with ar.checking("warn", health=True, activations_first=2, activations_every=4):
        train(11, fault=_near_overflow_from(5, until=7), growth_interval=1000, init_scale=16.0)
        assert found("AMP105") == []
        text = format_health_summary(ar.summary())
    assert "measured on 4 of 11 iterations: every one of the first 2, then one in 4" in text
    # activations_every=1 measures every iteration: the first one over the limit is named.
    ar.reset()
    with ar.checking("warn", health=True, activations_first=2, activations_every=1):
        train(11, fault=_near_overflow_from(5), growth_interval=1000, init_scale=16.0)
        (finding,) = found("AMP105")
        summary = ar.summary()
    assert finding.first_step == 5
    assert summary is not None
    assert summary["activation_iterations_measured"] == summary["activation_iterations"] == 11
    assert "measured on" not in format_health_summary(summary)


def test_an_overflow_that_skips_its_step_is_named_at_the_next_iteration() -> None:
    def fault(step: int, model: Net) -> None:
        model.encoder.layers[2].mlp.boost.factor = 1e6 if step >= 5 else 1.0

    with ar.checking("warn", health=True, activations_first=2, activations_every=16):
        train(9, fault=fault)
        (finding,) = found("AMP105")
        (loss,) = found("AMP101")
        summary = ar.summary()
    # Step 5 is not measured; its overflow makes the gradients non-finite, the scaler skips
    # it, and every iteration after a skipped step is measured.
    assert finding.first_step == 6
    assert "`encoder.layers.2.mlp.boost` (Amplify)" in finding.message
    assert loss.first_step == 5  # the loss is checked on every step
    assert summary is not None
    assert summary["activation_iterations_measured"] == 5  # 0, 1, 6, 7, 8


def test_the_hook_is_out_of_torchs_table_on_iterations_not_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where nothing is measured, module calls take torch's path without global hooks."""
    # Once Dynamo compiled anything in the process the hook stays in (its guards read the
    # table): this test stands for a process that compiled nothing.
    convert_frame = sys.modules.get("torch._dynamo.convert_frame")
    if convert_frame is not None:
        monkeypatch.setattr(convert_frame, "FRAME_COUNTER", 0)
    dynamo_utils = sys.modules.get("torch._dynamo.utils")
    if dynamo_utils is not None:
        monkeypatch.setattr(dynamo_utils, "counters", type(dynamo_utils.counters)(Counter))
    table = torch.nn.modules.module._global_forward_hooks
    before = len(table)
    hooks_seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hooks_seen.append(len(table) - before)
            return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Probe(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with ar.checking("warn", health=True, activations_first=1, activations_every=2) as seen:
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(6):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(torch.randn(4, 8)).float().pow(2).mean()
            _scaled_step(loss, optimizer, scaler)
    assert seen.findings == []
    assert hooks_seen == [1, 0, 1, 0, 1, 0]
    assert len(table) == before  # uninstalled while out of the table: nothing left behind


def _sampled_run(
    steps: int,
    blow_up_from: int,
    factor: float,
    *,
    optimizer: Callable[[nn.Module], torch.optim.Optimizer] = lambda m: torch.optim.SGD(
        m.parameters(), lr=0.0
    ),
    region_per: int = 1,
    **thresholds: Any,
) -> tuple[list[tuple[str, int | None]], dict[str, Any]]:
    """A small loop whose middle module multiplies by ``factor`` from ``blow_up_from`` on;
    ``region_per`` iterations share one autocast region (a backward inside it: AMP001)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Amplify(), nn.Linear(8, 1))
    opt = optimizer(model)
    with ar.checking("log", health=True, **thresholds):
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1000)
        step = 0
        while step < steps:
            with torch.autocast("cpu", dtype=torch.float16):
                for _ in range(region_per):
                    model[1].factor = factor if step >= blow_up_from else 1.0
                    loss = model(torch.randn(4, 8)).float().pow(2).mean()
                    opt.zero_grad()
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    step += 1
        summary = ar.summary()
    assert summary is not None
    return [(f.code, f.first_step) for f in ar.report() if f.code.startswith("AMP10")], summary


def test_iterations_sharing_one_autocast_region_are_decided_one_by_one() -> None:
    # Five iterations per region; measured: 0, then 4 and 8, and after a skipped step.
    # The overflow from step 6 skips it, so step 7 is measured, inside the region begun at 5.
    found, summary = _sampled_run(
        15, 6, 1e6, region_per=5, activations_first=1, activations_every=4
    )
    assert ("AMP105", 7) in found and ("AMP101", 6) in found
    assert summary["activation_iterations"] == 15


def test_a_fused_optimizers_skipped_steps_are_seen_when_the_statistics_are_read() -> None:
    # A fused optimizer takes found_inf on the device: torch reads nothing, nor does
    # amplint; its skipped steps reach the host with the statistics (every 4 steps here,
    # after steps 3, 7, 11), and the iterations until the next reading are measured.
    def fused(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

    found, summary = _sampled_run(
        16, 5, 1e6, optimizer=fused, every=4, activations_first=2, activations_every=16
    )
    assert ("AMP105", 8) in found and ("AMP101", 5) in found
    assert summary["activation_iterations_measured"] == 2 + 8  # 0, 1, then 8 to 15


def test_activation_counts_are_none_with_the_activation_check_off() -> None:
    _, summary = _sampled_run(4, 10, 1.0, activations=False)
    assert summary["activation_iterations"] is None
    assert summary["activation_iterations_measured"] is None
    text = format_health_summary(summary)
    assert "not measured (activations=False: AMP105 is off)" in text
    assert "compiled" not in text


def test_a_model_entering_autocast_in_its_own_forward_has_its_output_measured() -> None:
    """The root module's call begins before its region: the hook must be in place by then
    (decided when the iteration before ended)."""

    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.factor = 1.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.float16):
                return self.lin(x) * self.factor  # the root's own float16 output

    torch.manual_seed(0)
    model = Root()
    with torch.no_grad():
        model.lin.weight.zero_()
        model.lin.bias.fill_(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with ar.checking("log", health=True, activations_first=1, activations_every=2):
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
        for step in range(8):
            model.factor = 40000.0 if step >= 3 else 1.0
            loss = model(torch.randn(4, 8)).float().mean()
            _scaled_step(loss, opt, scaler)
        (finding,) = found("AMP105")
    assert finding.first_step == 4 and "`model` (Root)" in finding.message


def test_another_threads_open_region_does_not_stop_the_decisions() -> None:
    """A frozen model run under autocast in a loader thread holds a region open across
    iterations: the training thread's iterations are still decided one by one."""
    import threading
    import time

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Amplify(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    helper = nn.Linear(8, 8)
    opened, stop = threading.Event(), threading.Event()

    def loader() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
            opened.set()
            while not stop.is_set():
                helper(torch.randn(2, 8))
                time.sleep(0.001)

    with ar.checking("log", health=True, activations_first=1, activations_every=2):
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
        thread = threading.Thread(target=loader)
        try:
            for step in range(8):
                model[1].factor = 40000.0 if step >= 3 else 1.0
                if step == 1:
                    thread.start()
                    opened.wait(5)
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = model(torch.randn(4, 8)).float().mean()
                _scaled_step(loss, opt, scaler)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
        (finding,) = found("AMP105")
    assert finding.first_step == 4


# Gradients, the scale, the loss --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nonfinite_gradients_at_random_steps_are_the_skipped_steps(seed: int) -> None:
    rng = random.Random(seed)
    bad = set(rng.sample(range(3, 40), 4))
    poison = [INF, -INF, math.nan]

    def grad_fault(step: int, model: Net) -> None:
        if step in bad:
            layer = model.encoder.layers[rng.randrange(4)]
            layer.mlp.fc1.weight.grad[0, 0] = rng.choice(poison)

    with ar.checking("warn", health=True, skip_window=40, skip_rate=0.1):
        train(40, seed=seed, grad_fault=grad_fault)
        history = health.history()
        report = ar.report()
    assert {step for step, skipped in enumerate(history["skipped"]) if skipped} == bad
    # 4 of 40 steps skipped: AMP103 (rate 0.1 over 40 steps) at the last step, nothing else.
    assert [(f.code, f.first_step) for f in report] == [("AMP103", 39)]
    summary = ar.summary()
    assert summary is not None and summary["skipped_steps"] == 4 and summary["steps"] == 40


def test_scale_driven_to_collapse_by_repeated_infs() -> None:
    at = 6

    def grad_fault(step: int, model: Net) -> None:
        if step >= at:
            model.head.weight.grad.fill_(INF)

    # Consecutive backoffs: the 5th in a row is at step at + 4.
    with ar.checking("warn", health=True, max_backoffs=5):
        train(at + 8, grad_fault=grad_fault)
        (finding,) = found("AMP102")
    assert finding.first_step == at + 4
    assert "5 consecutive" in finding.message
    # The scale falling below 1: from 4 it is 4, 2, 1, 0.5 on steps 3..6 (no growth yet:
    # growth_interval is 4).
    ar.reset()

    def early(step: int, model: Net) -> None:
        if step >= 3:
            model.head.weight.grad.fill_(INF)

    with ar.checking("warn", health=True):
        train(10, grad_fault=early, init_scale=4.0)
        (finding,) = found("AMP102")
        summary = ar.summary()
        scales = health.history()["scale"]
    assert scales[3:7] == [4.0, 2.0, 1.0, 0.5]
    assert finding.first_step == 6
    assert "below 1" in finding.message
    assert summary is not None and summary["scale"]["min"] < 1 and summary["scale"]["max"] == 4.0


def test_loss_that_goes_nan() -> None:
    at = 9

    def loss_fault(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * math.nan if step == at else loss

    with ar.checking("warn", health=True):
        train(14, loss_fault=loss_fault)
        report = ar.report()
    assert [(f.code, f.first_step) for f in report] == [("AMP101", at)]
    assert "the loss was nan before scaling at step 9" in report[0].message


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_gradient_underflow_at_a_tiny_scale(fused: bool) -> None:
    """A fused optimizer unscales inside its own step, where no unscale_() runs: its
    gradients are measured as the step is called, still scaled, as unscale_() would."""

    def loss_fault(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * 1e-6

    with ar.checking("warn", health=True):
        train(3, loss_fault=loss_fault, init_scale=1.0, fused=fused)
        (finding,) = found("AMP104")
        summary = ar.summary()
    assert finding.first_step == 0
    assert summary is not None and summary["grad_underflow_share"] > 0.1


def test_a_fused_optimizers_healthy_gradients_are_measured_too() -> None:
    with ar.checking("warn", health=True):
        train(3, fused=True)
        summary = ar.summary()
        text = format_health_summary(summary)
    assert not found("AMP104")
    assert summary is not None and summary["grad_underflow_share"] is not None
    assert "gradient underflow share: 0.00% below float16's smallest normal" in text


def test_gradients_made_nonfinite_after_unscale_are_reported_not_changed() -> None:
    at = 4

    def grad_fault(step: int, model: Net) -> None:
        if step == -at - 1:  # after unscale_, before step
            model.head.bias.grad[0] = INF

    with ar.checking("warn", health=True):
        train(at + 3, grad_fault=grad_fault, unscale=True)
        (finding,) = found("AMP106")
        skipped = health.history()["skipped"]
    assert finding.first_step == at
    # torch's behaviour: the step ran with the inf gradient (the next ones then skip)
    assert not any(skipped[: at + 1])


def test_outputs_made_nan_by_applied_nonfinite_gradients_get_no_float32_advice() -> None:
    # The inf gradient AdamW applies at `at` makes the weights NaN: every later output is
    # NaN because of AMP106, not because a module overflows float16.
    at = 2

    def grad_fault(step: int, model: Net) -> None:
        if step == -at - 1:
            model.encoder.layers[0].mlp.fc1.weight.grad[0, 0] = INF

    with ar.checking("warn", health=True):
        model, _ = train(at + 4, grad_fault=grad_fault, unscale=True)
        (finding,) = found("AMP106")
        overflow_findings = found("AMP105")
        summary = ar.summary()
    assert finding.first_step == at
    assert not torch.isfinite(model.encoder.layers[0].mlp.fc1.weight).all()  # as in torch
    assert overflow_findings == []
    assert summary is not None
    overflow = summary["first_overflow"]
    assert overflow["step"] == at + 1 and overflow["after_nonfinite_step"] == at
    text = format_health_summary(summary)
    assert f"after the optimizer applied non-finite gradients at step {at} (AMP106)" in text
    # what follows from the broken weights says so, instead of the float16 advice
    (loss_finding,) = found("AMP101")
    assert loss_finding.first_step == at + 1
    assert f"follows the non-finite gradients the optimizer applied at step {at}" in (
        loss_finding.message
    )
    assert "find where it first goes non-finite" not in loss_finding.message


def _clipping_run(
    steps: int,
    at: int,
    *,
    clip_first: bool = False,
    max_norm: float = 1.0,
    between: Callable[[Net], None] | None = None,
    after: Callable[[Net], None] | None = None,
    empty_clip: bool = False,
) -> list[torch.Tensor]:
    """A loop that unscales and clips (``clip_first``: clips the scaled gradients, then
    unscales). At step ``at``, ``between`` runs between ``unscale_`` and the clip, and
    ``after`` between the clip and ``step``. ``empty_clip``: also clip an empty generator
    right after backward. Returns the trained parameters."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    generator = torch.Generator().manual_seed(100)
    for step in range(steps):
        x = torch.randn(6, 8, generator=generator)
        y = torch.randn(6, 4, generator=generator)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        if empty_clip:
            torch.nn.utils.clip_grad_norm_((p for p in ()), 1.0)
        if clip_first:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0**20)
        scaler.unscale_(opt)
        if step == at and between is not None:
            between(model)
        if not clip_first:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if step == at and after is not None:
            after(model)
        scaler.step(opt)
        scaler.update()
    return [p.detach().clone() for p in model.parameters()]


def _poison_through_data(model: Net) -> None:
    # .data writes (and collectives) leave the gradient's version counter where it was
    model.head.bias.grad.data[0] = INF


def _poison_in_place(model: Net) -> None:
    model.encoder.layers[1].mlp.fc1.weight.grad.mul_(INF)


# Where a loop that clips has its gradients broken after unscale_: through .data (which,
# like collectives, leaves version counters alone: only reading the gradients again at
# step() sees it; seen in timm's NativeScaler loop) or in place; between unscale_ and the
# clip, after the clip, or after unscale_ in a loop that clipped the scaled gradients.
_BROKEN_GRADIENTS: dict[str, tuple[dict[str, Any], int]] = {
    "data-before-clip": ({"between": _poison_through_data}, 3),
    "data-after-clip": ({"after": _poison_through_data}, 4),
    "in-place-after-clip": ({"after": _poison_in_place}, 2),
    "data-after-unscale-clip-first": ({"between": _poison_through_data, "clip_first": True}, 2),
}


@pytest.mark.parametrize("case", list(_BROKEN_GRADIENTS))
def test_gradients_broken_between_unscale_and_step_in_a_clipping_loop_are_reported(
    case: str,
) -> None:
    fault, at = _BROKEN_GRADIENTS[case]
    expected = _clipping_run(at + 2, at, **fault)
    with ar.checking("warn", health=True):
        got = _clipping_run(at + 2, at, **fault)
        (finding,) = found("AMP106")
        assert found("AMP105") == []  # the NaN outputs that follow are AMP106's doing
    assert finding.first_step == at
    for have, want in zip(got, expected, strict=True):
        torch.testing.assert_close(have, want, equal_nan=True, rtol=0, atol=0)


def test_a_nan_max_norm_makes_finite_gradients_nan_and_is_reported() -> None:
    # clip_grad_norm_'s norm is finite here, the gradients it leaves are not
    with ar.checking("warn", health=True):
        _clipping_run(3, 0, max_norm=math.nan)
        reported = found("AMP106")
    assert reported and reported[0].first_step == 0


def test_clipping_an_empty_generator_warns_as_torch_does_while_gradients_are_measured() -> None:
    # Step 0 takes the gradient statistics and the gradients are still scaled: amplint reads
    # the clip's parameters first, and hands torch a generator again.
    with ar.checking("warn", health=True), pytest.warns(UserWarning, match="empty generator"):
        _clipping_run(1, -1, empty_clip=True)


def _nan_gradients_at(*steps: int) -> Callable[[int, Net], None]:
    def grad_fault(step: int, model: Net) -> None:
        if step in steps:
            model.head.weight.grad[0, 0] = math.nan

    return grad_fault


def test_scheduler_stepped_after_skipped_steps_that_move_the_schedule() -> None:
    """Two skipped steps within the first 100: the schedule is 2% ahead (schedule_drift)."""
    with ar.checking("warn", health=True, startup_steps=0):
        train(9, grad_fault=_nan_gradients_at(5, 6), scheduler=True)
        (finding,) = found("AMP107")
    assert finding.first_step == 6
    assert "after 2 optimizer steps that scaler.step() skipped since step 0" in finding.message
    # Two of the seven steps since step 0 (the threshold counts a window of 100 at least).
    assert "(28.6% of the steps)" in finding.message
    # The same run with the default startup grace is silent.
    ar.reset()
    with ar.checking("warn", health=True):
        train(9, grad_fault=_nan_gradients_at(5, 6), scheduler=True)
        assert ar.report() == []


def test_a_fused_optimizers_skipped_steps_move_its_schedule_too() -> None:
    """A fused AdamW takes found_inf on the device: its skips are known when the statistics
    are read (every 16 steps, or at the end), and the scheduler steps after them with them."""
    with ar.checking("warn", health=True, startup_steps=0):
        _, fused = train(9, grad_fault=_nan_gradients_at(5, 6), scheduler=True, fused=True)
        summary = ar.summary()  # reads the statistics
        (finding,) = found("AMP107")
    assert finding.first_step == 6
    assert "after 2 optimizer steps that scaler.step() skipped since step 0" in finding.message
    assert summary is not None and summary["scheduler_steps_after_skip"] == 2
    ar.reset()
    with ar.checking("warn", health=True):  # the default startup grace: silent
        train(9, grad_fault=_nan_gradients_at(5, 6), scheduler=True, fused=True)
        ar.summary()
        assert ar.report() == []
    _, plain = train(9, grad_fault=_nan_gradients_at(5, 6), scheduler=True, fused=True)
    for have, want in zip(fused, plain, strict=True):
        torch.testing.assert_close(have, want, rtol=0, atol=0)


def _two_optimizers_run(
    skipped: tuple[int, ...], *, fused: bool = False, only_the_first: bool = False
) -> list[ar.Finding]:
    """Two models on one scaler, each with its optimizer and scheduler (a GAN's shape);
    the losses overflow on the ``skipped`` steps (``only_the_first``: one model's)."""
    torch.manual_seed(0)
    models = nn.Linear(8, 1), nn.Linear(8, 1)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, fused=fused) for m in models]
    schedulers = [torch.optim.lr_scheduler.StepLR(o, 3) for o in optimizers]
    with ar.checking("warn", health=True, startup_steps=0):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for step in range(9):
            for optimizer in optimizers:
                optimizer.zero_grad()
            x = torch.randn(4, 8)
            with torch.autocast("cpu", dtype=torch.float16):
                losses = [model(x).float().pow(2).mean() for model in models]
            if step in skipped:
                overflowing = losses[:1] if only_the_first else losses
                losses = [loss * math.inf for loss in overflowing] + losses[len(overflowing) :]
            scaler.scale(sum(losses)).backward()
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
            for scheduler in schedulers:
                scheduler.step()
        ar.summary()  # reads the statistics (a fused optimizer's skips)
        return found("AMP107")


def test_two_fused_optimizers_on_one_scaler_leave_their_schedules_unjudged() -> None:
    """torch skips each optimizer by its own gradients; the statistics say only that the
    scaler saw an overflow. Here only the first model overflows: its scheduler's drift
    cannot be told from the second's, so neither is reported."""
    assert _two_optimizers_run((5, 6), fused=True, only_the_first=True) == []


def test_two_optimizers_skipping_together_put_each_schedule_one_step_ahead() -> None:
    """A generator and a discriminator on one scaler, each with its scheduler: one
    overflow skips both steps, and each schedule is one step ahead, not two (2% of a
    window of 100 steps is two)."""
    assert _two_optimizers_run(skipped=(5,)) == []
    ar.reset()
    (finding,) = _two_optimizers_run(skipped=(5, 6))
    assert finding.first_step == 6
    assert "after 2 optimizer steps that scaler.step() skipped" in finding.message
    assert "the learning-rate schedule is 2 steps ahead" in finding.message


def test_a_scale_that_starts_at_one_and_backs_off_once_has_not_collapsed() -> None:
    # icefall's recipes start at init_scale=1.0: one skipped step halves it to 0.5, below
    # min_scale, and the run goes on. Two halvings below the start do count.
    with ar.checking("warn", health=True):
        train(8, grad_fault=_nan_gradients_at(3), init_scale=1.0, growth_interval=100)
        assert found("AMP102") == []
    ar.reset()
    with ar.checking("warn", health=True):
        train(8, grad_fault=_nan_gradients_at(3, 4, 5), init_scale=1.0, growth_interval=100)
        (finding,) = found("AMP102")
    assert finding.first_step == 6 and "the scale is 0.125, below 0.25" in finding.message


def test_a_loop_that_skips_its_step_on_a_nonfinite_norm_still_counts_the_skips() -> None:
    # The loop steps only when the gradient norm is finite but always updates: each such
    # update backs the scale off; those iterations are skipped steps (AMP102, AMP103).
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with ar.checking("log", health=True, startup_steps=0, skip_window=10):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for _ in range(30):
            loss = _float16_loss(model) * math.inf
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if torch.isfinite(norm):
                scaler.step(opt)
            scaler.update()
        summary = ar.summary()
        codes = {finding.code for finding in ar.report()}
    assert {"AMP102", "AMP103"} <= codes
    assert summary is not None and summary["skipped_steps"] == summary["steps"] == 30


def test_a_run_resumed_below_min_scale_has_collapsed() -> None:
    with ar.checking("warn", health=True):
        train(4, init_scale=2.0**-6)
        (finding,) = found("AMP102")
    assert finding.first_step == 0 and "below 1" in finding.message


def test_an_update_that_only_sets_a_new_scale_is_no_step() -> None:
    # icefall pushes a small scale back up after the step's own update(): torch takes no
    # step there, and the health steps stay the loop's iterations.
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with ar.checking("warn", health=True):
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
        for step in range(10):
            loss = _float16_loss(model)
            if step == 5:
                loss = loss * math.nan
            _scaled_step(loss, opt, scaler)
            if step % 4 == 0:
                scaler.update(scaler.get_scale() * 2.0)
        (finding,) = found("AMP101")
        summary = ar.summary()
    assert finding.first_step == 5
    assert summary is not None and summary["steps"] == 10


def test_an_occasional_skipped_step_is_not_a_schedule_drift() -> None:
    """A skip now and then after the startup steps (as the scaler's probe of a larger scale
    gives every growth_interval steps) moves the schedule by about 1%: not reported."""
    with ar.checking("warn", health=True):
        train(
            400, grad_fault=_nan_gradients_at(150, 250, 350), scheduler=True, growth_interval=2000
        )
        summary = ar.summary()
        assert found("AMP107") == []
    assert summary is not None and summary["scheduler_steps_after_skip"] >= 3


def test_raise_mode_raises_at_the_lazy_read_with_the_code() -> None:
    def loss_fault(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * math.nan if step == 2 else loss

    with ar.checking("raise", health=True, every=1), pytest.raises(ar.AmpUsageError) as excinfo:
        train(5, loss_fault=loss_fault)
    assert excinfo.value.code == "AMP101"


# Healthy runs --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_runs_are_silent(dtype: torch.dtype, seed: int) -> None:
    with ar.checking("raise", health=True):
        # Default initial scale: a few backoffs at the start are normal and must stay quiet.
        train(40, seed=seed, dtype=dtype, init_scale=2.0**16, unscale=seed == 1, scheduler=True)
        assert ar.report() == []
        summary = ar.summary()
    assert summary is not None
    if dtype is torch.float16:
        assert summary["steps"] == 40 and summary["first_overflow"] is None
    else:
        assert summary["steps"] == 0  # no enabled GradScaler in bfloat16


def test_cpu_outputs_are_measured_in_the_hook_and_not_kept_alive() -> None:
    # On the CPU each float16 output is reduced where the module made it: an output the
    # forward drops is freed as under plain torch, not held until scaler.scale().
    ar.install(health=True)
    torch.manual_seed(0)

    class Throwaway(nn.Module):
        """Makes a float16 output and drops it: nothing in autograd keeps it."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(8, 8)
            self.outer = nn.Linear(8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            discarded = self.inner(x)
            Throwaway.last = weakref.ref(discarded)
            del discarded
            return self.outer(x)

    model = Throwaway()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(4, 8), torch.randn(4, 1)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    assert Throwaway.last() is None  # freed before scale(): amplint holds no reference
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    summary = ar.summary()
    assert summary is not None and summary["steps"] == 1


def test_a_large_init_scale_settling_is_not_a_collapse() -> None:
    """init_scale 2**30 backs off on every step until the scale fits the gradients, more
    than max_backoffs (12) times in a row: that is settling, not AMP102's collapse, whose
    consecutive backoffs count down from torch's default 65536."""
    with ar.checking("warn", health=True):
        train(24, init_scale=2.0**30)
        summary = ar.summary()
        assert found("AMP102") == []
    assert summary is not None and summary["skipped_steps"] > 12


def test_a_second_checking_block_reports_its_own_step_at_a_line_seen_before() -> None:
    """The same training helper run in two ``checking()`` blocks (two experiments in one
    process, no reset between): the second block's finding has its own step and message,
    not the first block's, though both come from the same lines."""

    def fault_from(at: int, factor: float) -> Fault:
        def fault(step: int, model: Net) -> None:
            model.encoder.layers[2].mlp.boost.factor = factor if step >= at else 1.0

        return fault

    with ar.checking("log", health=True) as first:
        train(6, fault=fault_from(3, 1e6))
    with ar.checking("log", health=True) as second:
        train(8, fault=fault_from(6, 1e6))
    (earlier,) = [f for f in first.findings if f.code == "AMP105"]
    (later,) = [f for f in second.findings if f.code == "AMP105"]
    assert (earlier.first_step, later.first_step) == (3, 6)
    assert "at step 6" in later.message and later.count >= 1
    # Over the whole process the finding is one, first seen in the first block.
    (overall,) = found("AMP105")
    assert overall.first_step == 3


def test_two_threads_training_at_once_keep_each_steps_outputs_paired_with_their_slots() -> None:
    """Two models trained concurrently in two threads, each with its own scaler: the
    float16 outputs both hooks record, and their module slots, are taken together."""
    import threading

    def train_one(seed: int, out: list[float]) -> None:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Linear(32, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu")
        generator = torch.Generator().manual_seed(seed)
        for _ in range(150):
            x = torch.randn(8, 16, generator=generator)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(x).float().pow(2).mean()
            _scaled_step(loss, opt, scaler)
            out.append(loss.item())

    losses: list[list[float]] = [[], []]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # torch's warnings about a resized out=
        with ar.checking("log", health=True, activations_every=1):
            threads = [
                threading.Thread(target=train_one, args=(seed, losses[seed])) for seed in (0, 1)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            summary = ar.summary()
    assert internal_errors() == []
    assert [len(run) for run in losses] == [150, 150]
    assert summary is not None and summary["first_overflow"] is None


def test_after_reset_the_hook_still_measures_ahead_of_a_users_later_hook() -> None:
    torch.manual_seed(0)
    with ar.checking("log", health=True):
        handle = torch.nn.modules.module.register_module_forward_hook(clamp_float16)
        try:
            ar.reset()  # a fresh monitor: its hook takes the old one's place in the table
            model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 4), Offset())
            optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
            scaler = torch.amp.GradScaler("cpu")
            for _ in range(2):
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = model(torch.randn(8, 16)).float().sub(30000).square().mean()
                _scaled_step(loss, optimizer, scaler)
        finally:
            handle.remove()
        (finding,) = found("AMP105")
    assert finding.first_step == 0 and "`model.2` (Offset)" in finding.message


def test_a_checking_block_inside_an_install_reads_its_own_statistics() -> None:
    """Health left on by an outer install(): the block's statistics still unread when it
    ends are read then, as the block's."""

    def nan_loss_from(at: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
        return lambda step, loss: loss * float("nan") if step >= at else loss

    ar.install("log", health=True)
    try:
        with ar.checking("log", health=True) as first:
            train(5, loss_fault=nan_loss_from(3))
        with ar.checking("log", health=True) as second:
            train(7, loss_fault=nan_loss_from(5))
    finally:
        ar.uninstall()
    assert [f.first_step for f in first.findings if f.code == "AMP101"] == [3]
    # The outer install's run goes on through both blocks: its iterations count on (the
    # second block's step 5 is the run's tenth), as the usage checks count them.
    assert [f.first_step for f in second.findings if f.code == "AMP101"] == [5 + 5]
