"""install() patches torch and user modules' imported names; uninstall() undoes it exactly."""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator

import amplint.runtime as ar
import pytest
import torch
import torch.cpu.amp
import torch.cuda.amp
import torch.nn.utils.clip_grad
from runtime_helpers import batches, loss_of, tiny_model

PATCHED = [
    (torch, "autocast"),
    (torch.amp, "autocast"),
    (torch, "GradScaler"),
    (torch.amp, "GradScaler"),
    (torch.cuda.amp, "autocast"),
    (torch.cuda.amp, "GradScaler"),
    (torch.cpu.amp, "autocast"),
    (torch.cpu.amp, "GradScaler"),
    (torch.autograd, "backward"),
    (torch.autograd, "grad"),
    (torch.nn.utils, "clip_grad_norm_"),
    (torch.nn.utils, "clip_grad_value_"),
    (torch.nn.utils.clip_grad, "clip_grad_norm_"),
    (torch.nn.utils.clip_grad, "clip_grad_value_"),
    (torch.optim.Optimizer, "zero_grad"),
    (torch.nn.Module, "zero_grad"),
]


def snapshot() -> list[object]:
    return [owner.__dict__[name] for owner, name in PATCHED]


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    """A module that imported torch's names before install(), as a training script would."""
    module = types.ModuleType("amp_user_module_for_test")
    exec(
        "from torch.amp import GradScaler, autocast\n"
        "from torch.cuda.amp import GradScaler as CudaScaler\n"
        "from torch.nn.utils import clip_grad_norm_\n"
        "import torch\n"
        "scaler_cls = torch.GradScaler\n",
        module.__dict__,
    )
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_install_patches_and_uninstall_restores_identically() -> None:
    before = snapshot()
    ar.install()
    after_install = snapshot()
    assert all(a is not b for a, b in zip(before, after_install, strict=True))
    assert torch.autocast is ar.autocast and torch.amp.GradScaler is ar.GradScaler
    assert torch.cuda.amp.GradScaler is ar.CudaGradScaler
    assert torch.cpu.amp.autocast is ar.cpu_autocast
    # torch's own modules keep their references: only public names are patched, and
    # autocast_mode.autocast, the name by which Dynamo traces autocast natively.
    assert torch.amp.autocast_mode.autocast is ar.autocast
    assert torch.amp.grad_scaler.GradScaler is not ar.GradScaler
    ar.uninstall()
    assert all(a is b for a, b in zip(before, snapshot(), strict=True))


def test_isinstance_against_the_public_names_holds_as_without_amplint() -> None:
    """A scaler built from torch's own module (what FSDP's ShardedGradScaler subclasses)
    is a torch.amp.GradScaler, as it is without amplint; a generic one is no CPU one."""
    ar.install()
    try:
        torchs = torch.amp.grad_scaler.GradScaler("cpu")
        ours = torch.amp.GradScaler("cpu")
        assert isinstance(torchs, torch.amp.GradScaler) and isinstance(ours, torch.GradScaler)
        assert not isinstance(torchs, torch.cpu.amp.GradScaler)
        assert not isinstance(ours, torch.cpu.amp.GradScaler)
        assert not isinstance(object(), torch.amp.GradScaler)
        if torch.distributed.is_available():  # FSDP's stand-in names its own torch class
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            assert not isinstance(ours, ShardedGradScaler)
            assert isinstance(ShardedGradScaler("cpu"), torch.amp.GradScaler)
    finally:
        ar.uninstall()


def test_install_twice_and_uninstall_without_install_are_safe() -> None:
    before = snapshot()
    ar.uninstall()
    ar.install()
    ar.install(mode="log")
    assert ar.installed()
    ar.uninstall()
    ar.uninstall()
    assert not ar.installed()
    assert all(a is b for a, b in zip(before, snapshot(), strict=True))


def test_optimizer_hook_removed_on_uninstall() -> None:
    from torch.optim.optimizer import _global_optimizer_pre_hooks

    count = len(_global_optimizer_pre_hooks)
    ar.install()
    assert len(_global_optimizer_pre_hooks) == count + 1
    ar.uninstall()
    assert len(_global_optimizer_pre_hooks) == count


def test_names_imported_before_install_are_patched_and_restored(
    user_module: types.ModuleType,
) -> None:
    originals = dict(vars(user_module))
    ar.install()
    assert user_module.GradScaler is ar.GradScaler
    assert user_module.autocast is ar.autocast
    assert user_module.CudaScaler is ar.CudaGradScaler
    assert user_module.scaler_cls is ar.GradScaler
    assert user_module.clip_grad_norm_ is torch.nn.utils.clip_grad_norm_
    ar.uninstall()
    for name in ("GradScaler", "autocast", "CudaScaler", "scaler_cls", "clip_grad_norm_"):
        assert getattr(user_module, name) is originals[name]


def test_checking_restores_and_keeps_an_outer_install() -> None:
    before = snapshot()
    with ar.checking("raise"):
        assert ar.installed()
    assert not ar.installed() and all(a is b for a, b in zip(before, snapshot(), strict=True))
    ar.install("log")
    with ar.checking("raise"):
        pass
    assert ar.installed()
    from amplint.runtime.reporting import get_mode

    assert get_mode() == "log"


def test_install_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        ar.install("loud")
    assert not ar.installed()


def test_ignore_silences_a_code() -> None:
    model = tiny_model()
    x, y = batches(1)[0]
    with (
        ar.checking("raise", ignore=["amp001"]) as chk,
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        loss_of(model, x, y).backward()
    assert chk.findings == []


def test_unpatched_classes_still_check_without_install() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = ar.GradScaler("cpu")
    scaler.scale(loss_of(model, *batches(1)[0])).backward()
    scaler.step(opt)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError):
        warnings.simplefilter("always")
        scaler.step(opt)
    assert [w.message.code for w in caught if w.category is ar.AmpWarning] == ["AMP002"]


def test_uninstall_keeps_a_name_the_user_rebound(user_module: types.ModuleType) -> None:
    ar.install()

    class MyScaler(ar.GradScaler):
        pass

    user_module.GradScaler = MyScaler
    ar.uninstall()
    assert user_module.GradScaler is MyScaler
    assert user_module.autocast is torch.amp.autocast
