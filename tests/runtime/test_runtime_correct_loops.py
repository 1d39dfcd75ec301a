"""Correct AMP loops from PyTorch's AMP examples produce no finding at all."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import amplint.runtime as ar
import pytest
import torch
from runtime_helpers import batches, loss_of, tiny_model
from torch import nn


@pytest.fixture(autouse=True)
def no_amp_warnings() -> Iterator[None]:
    # Any finding would also be a warning: make one fail the test loudly.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ar.AmpWarning)
        yield


def run_clean(loop: Callable[[], None]) -> None:
    with ar.checking("raise") as chk:
        loop()
    assert chk.findings == []


def test_basic_float16_loop() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    run_clean(loop)


def test_gradient_accumulation() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    accumulate = 2

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for i, (x, y) in enumerate(batches(6)):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y) / accumulate
            scaler.scale(loss).backward()
            if (i + 1) % accumulate == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()

    run_clean(loop)


def test_two_optimizers_one_scaler() -> None:
    model0, model1 = tiny_model(0), tiny_model(1)
    opt0 = torch.optim.SGD(model0.parameters(), lr=0.1)
    opt1 = torch.optim.Adam(model1.parameters(), lr=0.01)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt0.zero_grad()
            opt1.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                out0, out1 = model0(x).float(), model1(x).float()
                loss0 = nn.functional.mse_loss(0.3 * out0 + 0.7 * out1, y)
                loss1 = nn.functional.mse_loss(0.6 * out0 - 0.4 * out1, y)
            scaler.scale(loss0).backward(retain_graph=True)
            scaler.scale(loss1).backward()
            scaler.unscale_(opt0)
            torch.nn.utils.clip_grad_norm_(model0.parameters(), 1.0)
            scaler.step(opt0)
            scaler.step(opt1)
            scaler.update()

    run_clean(loop)


def test_gradient_penalty() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            params = list(model.parameters())
            scaled_grads = torch.autograd.grad(scaler.scale(loss), params, create_graph=True)
            inv_scale = 1.0 / scaler.get_scale()
            grads = [g * inv_scale for g in scaled_grads]
            with torch.autocast("cpu", dtype=torch.float16):
                penalty = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
                loss = loss + penalty
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    run_clean(loop)


def test_unscale_then_clip() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)
            scaler.step(opt)
            scaler.update()

    run_clean(loop)


def test_nested_autocast_disabled_region() -> None:
    model = tiny_model()
    head = nn.Linear(4, 4)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                hidden = model(x)
                with torch.autocast("cpu", enabled=False):
                    out = head(hidden.float())
                    assert out.dtype is torch.float32
                loss = nn.functional.mse_loss(out, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    run_clean(loop)


def test_bfloat16_without_scaler_and_decorated_forward() -> None:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)

    @torch.autocast("cpu", dtype=torch.bfloat16)
    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def loop() -> None:
        for x, y in batches(3):
            opt.zero_grad()
            out = forward(x)
            assert out.dtype is torch.bfloat16
            loss = nn.functional.mse_loss(out.float(), y)
            loss.backward()
            opt.step()

    run_clean(loop)


@pytest.mark.parametrize("amp", [True, False])
def test_amp_switched_by_flag(amp: bool) -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu", enabled=amp)
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    run_clean(loop)


def test_fused_adam_and_checkpoint_after_update() -> None:
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(model, x, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            torch.save({"scaler": scaler.state_dict()}, _Sink())

    run_clean(loop)


class _Sink:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


@contextmanager
def count_readbacks() -> Iterator[list[int]]:
    """Counts Python-visible tensor readbacks (item, bool, float, int, tolist)."""
    counter = [0]
    originals = {
        name: getattr(torch.Tensor, name)
        for name in ("item", "__bool__", "__float__", "__int__", "tolist")
    }

    def counting(original: Callable[..., object]) -> Callable[..., object]:
        def wrapper(self: torch.Tensor, *args: object) -> object:
            counter[0] += 1
            return original(self, *args)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(original))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("fused", [False, True])
def test_checks_add_no_host_readbacks(fused: bool) -> None:
    def train(install: bool) -> int:
        model = tiny_model()
        opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=fused)
        with ar.checking("raise") if install else _nothing():
            scaler = torch.amp.GradScaler("cpu")
            data = batches(4)
            with count_readbacks() as counter:
                for x, y in data:
                    opt.zero_grad()
                    with torch.autocast("cpu", dtype=torch.float16):
                        loss = loss_of(model, x, y)
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
                    scaler.step(opt)
                    scaler.update()
        return counter[0]

    assert train(install=True) == train(install=False)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_reentrant_checkpointing_backward_is_not_blamed() -> None:
    from torch.utils.checkpoint import checkpoint

    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                out = checkpoint(model, x.requires_grad_(), use_reentrant=True)
                loss = nn.functional.mse_loss(out.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    run_clean(loop)


def test_fp32_side_model_next_to_an_amp_model() -> None:
    amp_model, side_model = tiny_model(0), tiny_model(1)
    amp_opt = torch.optim.SGD(amp_model.parameters(), lr=0.1)
    side_opt = torch.optim.SGD(side_model.parameters(), lr=0.1)

    def loop() -> None:
        scaler = torch.amp.GradScaler("cpu")
        for x, y in batches(3):
            amp_opt.zero_grad()
            side_opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_of(amp_model, x, y)
            scaler.scale(loss).backward()
            loss_of(side_model, x, y).backward()  # plain fp32, its own optimizer
            scaler.step(amp_opt)
            scaler.update()
            side_opt.step()

    run_clean(loop)


def test_gradient_penalty_recipe_whose_penalty_overflows_at_the_first_scale() -> None:
    """PyTorch's gradient-penalty recipe at the default scale: the scaled gradients, and so
    the penalty built from them, overflow on the first steps; the scaler skips those steps
    as designed. That is no non-finite loss of the model's (AMP101), with health on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    inputs, targets = torch.randn(20, 8, 16), torch.randn(20, 8, 1)
    with ar.checking("raise", health=True) as chk:
        scaler = torch.amp.GradScaler("cpu")
        for step in range(20):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.mse_loss(model(inputs[step]), targets[step])
            scaled = torch.autograd.grad(
                outputs=scaler.scale(loss), inputs=model.parameters(), create_graph=True
            )
            inv_scale = 1.0 / scaler.get_scale()
            grads = [g * inv_scale for g in scaled]
            with torch.autocast("cpu", dtype=torch.float16):
                norm = 0
                for grad in grads:
                    norm += grad.pow(2).sum()
                loss = loss + norm.sqrt()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        summary = ar.summary()
    assert chk.findings == []
    assert summary is not None and summary["skipped_steps"] >= 1  # the overflow happened
