"""PyTorch's device-generic GradScaler tests, rewritten for CPU and run against amplint's
GradScaler with ``torch.GradScaler`` / ``torch.amp.GradScaler`` patched to it.

The scenarios follow the grad-scaling tests of torch's test/test_torch.py (unscale,
state_dict, autocast with SGD/Adam/AdamW incl. foreach and fused, clipping with and
without a separate unscale_, gradient penalty, accumulation, two models and optimizers,
the scaler passing itself to `_step_supports_amp_scaling` optimizers, fused optimizers
after an explicit unscale_, grads invalidated between unscale_ and step). Every test
creates its scaler through torch's public names, so it exercises the patch.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any

import amplint.runtime as ar
import pytest
import torch
from torch import nn

Optimizer = Callable[..., torch.optim.Optimizer]
# Torch's own class, the reference. Held in a tuple: install() rebinds module globals
# that name torch's originals, which is what user code wants but not this reference.
_REFERENCE = (torch.amp.GradScaler,)


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    with warnings.catch_warnings(), ar.checking("warn"):
        warnings.simplefilter("ignore", ar.AmpWarning)
        assert torch.amp.GradScaler is ar.GradScaler
        assert torch.GradScaler is ar.GradScaler
        yield


def scaling_case(
    optimizer_ctor: Optimizer = torch.optim.SGD, optimizer_kwargs: dict[str, Any] | None = None
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.Optimizer, list, Any, int]:
    torch.manual_seed(7)
    data = [(torch.randn(8, 8), torch.randn(8, 8)) for _ in range(4)]
    mod_control = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    mod_scaling = copy.deepcopy(mod_control)
    kwargs = {"lr": 1.0 if optimizer_ctor is torch.optim.SGD else 1e-3, **(optimizer_kwargs or {})}
    opt_control = optimizer_ctor(mod_control.parameters(), **kwargs)
    opt_scaling = optimizer_ctor(mod_scaling.parameters(), **kwargs)
    return mod_control, mod_scaling, opt_control, opt_scaling, data, nn.MSELoss(), 2


RunFn = Callable[..., Any]


def run_scaling_case(run: RunFn, unskipped: int, skipped: int, atol: float = 1e-7) -> None:
    for enabled in (True, False):
        mod_control, mod_scaling, opt_control, opt_scaling, data, loss_fn, skip_iter = (
            scaling_case()
        )
        scaler = torch.GradScaler(
            "cpu", init_scale=128.0, growth_factor=2.0, enabled=enabled, growth_interval=1
        )
        run(data, mod_control, opt_control, scaler, loss_fn, skip_iter, False)
        returned = run(data, mod_scaling, opt_scaling, scaler, loss_fn, skip_iter, True)
        scaler = returned or scaler
        expected = 128.0 * 2.0**unskipped * 0.5**skipped if enabled else 1.0
        assert scaler.get_scale() == expected
        for c, s in zip(mod_control.parameters(), mod_scaling.parameters(), strict=True):
            torch.testing.assert_close(c.grad, s.grad, atol=atol, rtol=1e-5)
            torch.testing.assert_close(c, s, atol=atol, rtol=1e-5)


def test_unscale_finds_infs_across_dtypes_and_layouts() -> None:
    inv_scale = torch.full((1,), 0.25)
    g = torch.full((10, 10), 4.0)

    def grads(inject: int) -> list[torch.Tensor]:
        out = [g.clone(), g.clone()[:, :5], g.half(), g.half()]
        if inject >= 0:
            out[inject][2, 2] = float("inf")
        return out

    scaler = torch.amp.GradScaler("cpu")
    params = [torch.empty_like(t) for t in grads(-1)]
    opt = torch.optim.SGD(params, lr=1.0)
    for inject in range(-1, len(params)):
        current = grads(inject)
        for p, grad in zip(params, current, strict=True):
            p.grad = grad
        found = scaler._unscale_grads_(opt, inv_scale, torch.zeros(1), True)
        total = sum(v.item() for v in found.values())
        if inject < 0:
            assert total == 0
            for grad in current:
                torch.testing.assert_close(grad, torch.ones_like(grad))
        else:
            assert total == 1


def test_update_scale_growth_and_backoff() -> None:
    scale = torch.full((1,), 4.0)
    tracker = torch.zeros(1, dtype=torch.int32)
    found_inf = torch.zeros(1)
    for expected_tracker, expected_scale in ((1, 4.0), (0, 8.0)):
        torch._amp_update_scale_(scale, tracker, found_inf, 2.0, 0.25, 2)
        assert (tracker.item(), scale.item()) == (expected_tracker, expected_scale)
    found_inf.fill_(1.0)
    torch._amp_update_scale_(scale, tracker, found_inf, 2.0, 0.25, 2)
    assert (tracker.item(), scale.item()) == (0, 2.0)


@pytest.mark.parametrize("lazy_init_scale", [True, False])
def test_state_dict(lazy_init_scale: bool) -> None:
    s0 = torch.GradScaler(
        "cpu", init_scale=3.0, growth_factor=4.0, backoff_factor=0.5, growth_interval=2
    )
    s1 = torch.GradScaler(
        "cpu", init_scale=6.0, growth_factor=7.0, backoff_factor=0.8, growth_interval=1
    )
    s1._init_growth_tracker = 7
    if lazy_init_scale:
        s1.scale(torch.full((1,), 4.0))
        assert s1._scale is not None and s1._scale.dtype is torch.float32
    s1.load_state_dict(s0.state_dict())
    assert s1.get_scale() == 3.0
    assert (s1.get_growth_factor(), s1.get_backoff_factor()) == (4.0, 0.5)
    assert s1.get_growth_interval() == 2
    assert s1._init_growth_tracker == 0
    assert set(s0.state_dict()) == {
        "scale",
        "growth_factor",
        "backoff_factor",
        "growth_interval",
        "_growth_tracker",
    }


def _autocast_run(try_pickle: bool) -> RunFn:
    def run(data, model, optimizer, scaler, loss_fn, skip_iter, try_scaling_api):
        for i, (inp, target) in enumerate(data):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16, enabled=try_scaling_api):
                loss = loss_fn(model(inp).float(), target)
            if try_scaling_api:
                scaler.scale(loss).backward()
                if i == skip_iter and scaler.is_enabled():
                    with torch.no_grad():
                        model[1].weight.grad.fill_(float("inf"))
                scaler.step(optimizer)
                scaler.update()
                if try_pickle:
                    scaler = pickle.loads(pickle.dumps(scaler))
            else:
                loss.backward()
                if not scaler.is_enabled() or i != skip_iter:
                    optimizer.step()
        return scaler

    return run


@pytest.mark.parametrize("try_pickle", [False, True])
def test_autocast_sgd_matches_fp32_control(try_pickle: bool) -> None:
    run_scaling_case(_autocast_run(try_pickle), unskipped=3, skipped=1, atol=2e-2)


@pytest.mark.parametrize(
    ("ctor", "kwargs"),
    [
        (torch.optim.SGD, {}),
        (torch.optim.SGD, {"foreach": True}),
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"foreach": True}),
        (torch.optim.Adam, {"fused": True}),
        (torch.optim.AdamW, {"foreach": True}),
        (torch.optim.AdamW, {"fused": True}),
    ],
)
def test_autocast_optimizers_bitwise_equal_to_torchs_scaler(ctor: Optimizer, kwargs: dict) -> None:
    # torch's own test compares against an fp32 control with a tolerance (and expects Adam
    # to miss it); against torch's own GradScaler the answer must be exact.
    results = []
    assert _REFERENCE[0] is not torch.GradScaler
    for scaler_cls in (_REFERENCE[0], torch.GradScaler):
        _, model, _, opt, data, loss_fn, skip_iter = scaling_case(ctor, kwargs)
        scaler = scaler_cls("cpu", init_scale=128.0, growth_interval=1)
        _autocast_run(try_pickle=True)(data, model, opt, scaler, loss_fn, skip_iter, True)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_clipping_scaled_max_norm() -> None:
    def run(data, model, optimizer, scaler, loss_fn, skip_iter, try_scaling_api):
        max_norm = 0.2
        for i, (inp, target) in enumerate(data):
            optimizer.zero_grad()
            loss = loss_fn(model(inp), target)
            if try_scaling_api:
                scaler.scale(loss).backward()
                nn.utils.clip_grad_norm_(model.parameters(), max_norm * scaler.get_scale())
                if i == skip_iter and scaler.is_enabled():
                    model[1].weight.grad.data.fill_(float("inf"))
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if not scaler.is_enabled() or i != skip_iter:
                    optimizer.step()

    run_scaling_case(run, unskipped=3, skipped=1, atol=1e-5)


def test_clipping_separate_unscale() -> None:
    def run(data, model, optimizer, scaler, loss_fn, skip_iter, try_scaling_api):
        max_norm = 0.2
        for i, (inp, target) in enumerate(data):
            optimizer.zero_grad()
            loss = loss_fn(model(inp), target)
            if try_scaling_api:
                scaler.scale(loss).backward()
                if i == skip_iter and scaler.is_enabled():
                    model[1].weight.grad.data.fill_(float("inf"))
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm, error_if_nonfinite=False)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if not scaler.is_enabled() or i != skip_iter:
                    optimizer.step()

    run_scaling_case(run, unskipped=3, skipped=1)


def test_gradient_penalty() -> None:
    def run(data, model, optimizer, scaler, loss_fn, skip_iter, try_scaling_api):
        for i, (inp, target) in enumerate(data):
            optimizer.zero_grad()
            loss = loss_fn(model(inp), target)
            if try_scaling_api:
                grads = torch.autograd.grad(
                    scaler.scale(loss), model.parameters(), create_graph=True
                )
                inv_scale = 1.0 / scaler.get_scale()
                grads = [g * inv_scale for g in grads]
            else:
                grads = torch.autograd.grad(loss, model.parameters(), create_graph=True)
            loss = loss + torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
            if try_scaling_api:
                scaler.scale(loss).backward()
                if i == skip_iter and scaler.is_enabled():
                    model[1].weight.grad.data.fill_(float("inf"))
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if not scaler.is_enabled() or i != skip_iter:
                    optimizer.step()

    run_scaling_case(run, unskipped=3, skipped=1)


def test_accumulation() -> None:
    def run(data, model, optimizer, scaler, loss_fn, skip_iter, try_scaling_api):
        accumulate = 2
        for i, (inp, target) in enumerate(data):
            loss = loss_fn(model(inp), target) / accumulate
            if try_scaling_api:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            if (i + 1) % accumulate == 0:
                if try_scaling_api:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad()

    run_scaling_case(run, unskipped=2, skipped=0)


@pytest.mark.parametrize("enabled", [True, False])
def test_two_models_two_losses_two_optimizers(enabled: bool) -> None:
    mod_c0, mod_s0, opt_c0, opt_s0, data, loss_fn, skip_iter = scaling_case()
    torch.manual_seed(11)
    mod_c1 = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    mod_s1 = copy.deepcopy(mod_c1)
    opt_c1 = torch.optim.SGD(mod_c1.parameters(), lr=1.0)
    opt_s1 = torch.optim.SGD(mod_s1.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler(
        "cpu", init_scale=128.0, growth_factor=2.0, enabled=enabled, growth_interval=1
    )

    def run(model0, model1, optimizer0, optimizer1, scaling: bool) -> None:
        for i, (inp, target) in enumerate(data):
            optimizer0.zero_grad()
            optimizer1.zero_grad()
            out0, out1 = model0(inp), model1(inp)
            loss0 = loss_fn(0.3 * out0 + 0.7 * out1, target)
            loss1 = loss_fn(0.6 * out0 - 0.4 * out1, target)
            if scaling:
                scaler.scale(loss0).backward(retain_graph=True)
                scaler.scale(loss1).backward()
                if i == skip_iter and scaler.is_enabled():
                    model1[1].weight.grad.data.fill_(float("inf"))
                scaler.unscale_(optimizer0)
                scaler.step(optimizer0)
                scaler.step(optimizer1)
                scaler.update()
            else:
                loss0.backward(retain_graph=True)
                loss1.backward()
                optimizer0.step()
                if not scaler.is_enabled() or i != skip_iter:
                    optimizer1.step()

    run(mod_c0, mod_c1, opt_c0, opt_c1, False)
    run(mod_s0, mod_s1, opt_s0, opt_s1, True)
    assert scaler.get_scale() == (128.0 * 2.0**3 * 0.5 if enabled else 1.0)
    for c, s in zip(
        chain(mod_c0.parameters(), mod_c1.parameters()),
        chain(mod_s0.parameters(), mod_s1.parameters()),
        strict=True,
    ):
        torch.testing.assert_close(c, s, rtol=1e-5, atol=1e-7)


def test_scaler_passes_itself_to_amp_aware_optimizers() -> None:
    seen: dict[str, Any] = {}

    class AmpAware(torch.optim.Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {})
            self._step_supports_amp_scaling = True

    class TakesScaler(AmpAware):
        def step(self, closure: Any = None, *, grad_scaler: Any = None) -> None:
            seen["scaler"] = grad_scaler
            seen["attrs_1"] = hasattr(self, "grad_scale") or hasattr(self, "found_inf")

    class ReadsAttributes(AmpAware):
        def step(self, closure: Any = None) -> None:
            seen["grad_scale"] = self.grad_scale
            seen["found_inf"] = self.found_inf

    model = nn.Linear(4, 1)
    o1, o2 = TakesScaler(model.parameters()), ReadsAttributes(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(torch.randn(4, 4)).float().mean()
    scaler.scale(loss).backward()
    with pytest.warns(FutureWarning):
        scaler.step(o1)
    scaler.step(o2)
    scaler.update()
    assert isinstance(seen["scaler"], torch.amp.GradScaler) and seen["scaler"] is scaler
    assert seen["attrs_1"] is False
    assert isinstance(seen["grad_scale"], torch.Tensor)
    assert isinstance(seen["found_inf"], torch.Tensor)
    assert not hasattr(o2, "grad_scale") and not hasattr(o2, "found_inf")


@pytest.mark.parametrize("separate_unscale", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_optimizers_match_unfused(separate_unscale: bool, amsgrad: bool) -> None:
    mod_control, mod_scaling, _, _, data, loss_fn, _ = scaling_case()
    opt_control = torch.optim.Adam(mod_control.parameters(), lr=1.0, amsgrad=amsgrad)
    opt_scaling = torch.optim.Adam(mod_scaling.parameters(), lr=1.0, amsgrad=amsgrad, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
    for inp, target in data:
        for model, opt, unscale in (
            (mod_control, opt_control, False),
            (mod_scaling, opt_scaling, separate_unscale),
        ):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = loss_fn(model(inp).float(), target)
            scaler.scale(loss).backward()
            if unscale:
                scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
        for pc, ps in zip(mod_control.parameters(), mod_scaling.parameters(), strict=True):
            torch.testing.assert_close(pc.grad, ps.grad)
            torch.testing.assert_close(pc, ps)


@pytest.mark.parametrize(
    "kwargs", [{"foreach": False}, {"foreach": True}, {"fused": True}], ids=str
)
def test_grads_broken_between_unscale_and_step_still_reach_params(kwargs: dict) -> None:
    # step() after an explicit unscale_ must not re-check the gradients: torch applies them.
    model, _, opt, _, data, loss_fn, _ = scaling_case(torch.optim.Adam, kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
    for inp, target in data:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_fn(model(inp).float(), target)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        for j, param in enumerate(model.parameters()):
            param.grad.copy_(torch.tensor(torch.inf if j % 2 else torch.nan))
        scaler.step(opt)
        scaler.update()
    assert all(p.isnan().any() or p.isinf().any() for p in model.parameters())


def test_scale_will_not_overflow() -> None:
    model = nn.Linear(5, 1)
    opt = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", growth_interval=1, growth_factor=2**4, init_scale=1e38)
    opt.zero_grad()
    loss = ((model(torch.randn(1, 5)) - 1e-30 * torch.randn(1, 1)) ** 2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(scaler._scale).all()


# Found by running torch's own tests under every mode (benchmarks/run_upstream_gradscaler_tests.py)


def test_deprecated_cpu_scaler_keeps_torchs_future_warning() -> None:
    # torch's test matches its own wording; the stand-in must keep it word for word.
    wording = r"`torch\.cpu\.amp\.GradScaler\(args\.\.\.\)` is deprecated\."
    with pytest.warns(FutureWarning, match=wording):
        scaler = torch.cpu.amp.GradScaler(init_scale=2.0)
    assert isinstance(scaler, ar.GradScaler) and scaler.get_scale() == 2.0


def _break_grads_after_unscale(scaler: Any, kwargs: dict) -> tuple[list[torch.Tensor], Any]:
    """One iteration that writes inf/nan into the gradients between unscale_ and step;
    returns the parameters and the first error update() raised (None if it returned)."""
    model, _, opt, _, data, loss_fn, _ = scaling_case(torch.optim.Adam, kwargs)
    inp, target = data[0]
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_fn(model(inp).float(), target)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    for j, param in enumerate(model.parameters()):
        param.grad.copy_(torch.tensor(torch.inf if j % 2 else torch.nan))
    scaler.step(opt)
    error = None
    try:
        scaler.update()
    except ar.AmpUsageError as err:
        error = err
    return [p.detach().clone() for p in model.parameters()], error


@pytest.mark.parametrize(
    "kwargs", [{"foreach": False}, {"foreach": True}, {"fused": True}], ids=str
)
def test_raise_mode_stops_broken_grads_only_after_torchs_step_and_update(kwargs: dict) -> None:
    # raise mode may stop the run, but the step it reports on is torch's, unchanged, and the
    # scaler is left consistent (torch's update ran) so a handler can carry on.
    expected, _ = _break_grads_after_unscale(_REFERENCE[0]("cpu", init_scale=128.0), kwargs)
    reference_scale = _REFERENCE[0]("cpu", init_scale=128.0)
    _break_grads_after_unscale(reference_scale, kwargs)
    with ar.checking("raise", health=True, every=1):
        scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
        params, error = _break_grads_after_unscale(scaler, kwargs)
    assert error is not None and error.code == "AMP106"
    for got, want in zip(params, expected, strict=True):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    assert not scaler._per_optimizer_states
    assert scaler.get_scale() == reference_scale.get_scale()


class _Readbacks:
    """Counts Python-visible tensor readbacks: the CPU stand-in for a host sync."""

    NAMES = ("item", "__bool__", "__float__", "__int__", "tolist")

    def __enter__(self) -> _Readbacks:
        self.count = 0
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}

        def counted(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(tensor: torch.Tensor, *args: Any) -> Any:
                self.count += 1
                return original(tensor, *args)

            return wrapper

        for name, original in self.saved.items():
            setattr(torch.Tensor, name, counted(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


def _fused_steps(scaler: Any, unscale: bool) -> tuple[list[torch.Tensor], int]:
    model, _, opt, _, data, loss_fn, _ = scaling_case(torch.optim.Adam, {"fused": True})
    reads = 0
    for inp, target in data:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = loss_fn(model(inp).float(), target)
        scaler.scale(loss).backward()
        with _Readbacks() as counter:
            if unscale:
                scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
        reads += counter.count
    return [p.detach().clone() for p in model.parameters()], reads


@pytest.mark.parametrize("health", [False, True], ids=["usage", "health"])
@pytest.mark.parametrize("unscale", [False, True], ids=["step", "unscale_step"])
def test_fused_optimizer_path_stays_sync_free(unscale: bool, health: bool) -> None:
    # Fused optimizers take grad_scale/found_inf as tensors: torch reads nothing back, and
    # neither may amplint, with or without a separate unscale_ and the health checks.
    expected, torch_reads = _fused_steps(_REFERENCE[0]("cpu", init_scale=128.0), unscale)
    with ar.checking("warn", health=health, every=1, underflow_every=1):
        params, reads = _fused_steps(torch.amp.GradScaler("cpu", init_scale=128.0), unscale)
    assert torch_reads == 0 and reads == 0
    assert all(torch.equal(a, b) for a, b in zip(params, expected, strict=True))
