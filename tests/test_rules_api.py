"""API and device-family rules (AMP007, AMP008, AMP015, AMP017, AMP020) beyond their examples.

The fixed programs are executed with real torch on the CPU: the fix must give code that runs,
emits no deprecation warning, and computes what the original (or PyTorch's recipe) computes.
"""

from __future__ import annotations

import textwrap
import warnings

import pytest

from amplint.engine.run import fix_bytes, lint_bytes

torch = pytest.importorskip("torch")


def _fix(source: str, code: str, *, unsafe: bool = True) -> str:
    result = fix_bytes(textwrap.dedent(source).encode(), "example.py", {code}, unsafe=unsafe)
    assert result.data is not None, "no fix applied"
    return result.data.decode()


def _codes(source: str, code: str) -> list[int]:
    findings = lint_bytes(textwrap.dedent(source).encode(), "example.py", {code}).findings
    return [f.location.row for f in findings if f.code == code]


def _run(source: str, *, future_warnings_are_errors: bool = False) -> dict:
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if future_warnings_are_errors:
            warnings.simplefilter("error", FutureWarning)
        exec(compile(textwrap.dedent(source), "example.py", "exec"), namespace)
        namespace["result"] = namespace["run"]()
    return namespace


LEGACY_CPU_LOOP = """
import torch
from torch.cpu.amp import autocast as ac

def run():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.cpu.amp.GradScaler(1024.0, 2.0, 0.5, 2000, True)
    x = torch.randn(8, 4)
    dtypes = []
    for _ in range(3):
        opt.zero_grad()
        with ac(True, torch.float16):
            out = model(x)
        dtypes.append(out.dtype)
        loss = out.float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return scaler.get_scale(), dtypes, model.weight.detach().clone()
"""


def test_amp007_fix_keeps_legacy_positional_meaning_and_warns_no_more() -> None:
    fixed = _fix(LEGACY_CPU_LOOP, "AMP007")
    assert "from torch.amp import autocast as ac" in fixed
    assert 'torch.amp.GradScaler("cpu", init_scale=1024.0' in fixed
    assert 'ac("cpu", enabled=True, dtype=torch.float16)' in fixed
    before = _run(LEGACY_CPU_LOOP)["result"]
    after = _run(fixed, future_warnings_are_errors=True)["result"]
    assert after[0] == before[0] == 1024.0  # init_scale went to init_scale, not the device
    assert after[1] == before[1] == [torch.float16] * 3
    assert torch.equal(after[2], before[2])


CUSTOM_FN = """
import torch

class Square(torch.autograd.Function):
    @staticmethod
    @torch.cuda.amp.custom_fwd(cast_inputs=torch.float32)
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.cuda.amp.custom_bwd
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad

def run():
    x = torch.arange(4.0, requires_grad=True)
    Square.apply(x).sum().backward()
    return x.grad
"""


def test_amp007_custom_fwd_fix_runs() -> None:
    fixed = _fix(CUSTOM_FN, "AMP007")
    assert '@torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)' in fixed
    assert '@torch.amp.custom_bwd(device_type="cuda")' in fixed
    after = _run(fixed, future_warnings_are_errors=True)["result"]
    assert torch.equal(after, _run(CUSTOM_FN)["result"])


def test_amp007_function_import_is_renamed_with_its_uses() -> None:
    source = """
    from torch import get_autocast_cpu_dtype, set_autocast_cpu_dtype as set_dtype

    def run():
        set_dtype(get_autocast_cpu_dtype())
        return get_autocast_cpu_dtype()
    """
    assert _codes(source, "AMP007") == [5, 5, 6]
    fixed = _fix(source, "AMP007")
    assert "from torch import get_autocast_dtype, set_autocast_dtype as set_dtype" in fixed
    assert 'set_dtype("cpu", get_autocast_dtype("cpu"))' in fixed
    assert _run(fixed, future_warnings_are_errors=True)["result"] == torch.bfloat16


def test_amp007_unsafe_subclass_does_not_hold_back_safe_fixes() -> None:
    source = """
    import torch

    class S(torch.cuda.amp.GradScaler):
        pass

    with torch.cuda.amp.autocast():
        pass
    """
    safe = _fix(source, "AMP007", unsafe=False)
    assert "class S(torch.cuda.amp.GradScaler)" in safe
    assert 'torch.amp.autocast("cuda", dtype=torch.float16)' in safe
    assert "class S(torch.amp.GradScaler)" in _fix(source, "AMP007")


def test_amp007_subclass_built_with_positional_arguments_gets_no_fix() -> None:
    source = """
    import torch

    class S(torch.cuda.amp.GradScaler):
        pass

    scaler = S(1024.0)
    """
    findings = lint_bytes(textwrap.dedent(source).encode(), "x.py", {"AMP007"}).findings
    assert [f.fix for f in findings] == [None]


def test_amp007_guarded_import_and_its_uses_are_left_alone() -> None:
    source = """
    try:
        from torch.cuda.amp import autocast
    except ImportError:
        autocast = None

    with autocast():
        pass
    """
    assert _codes(source, "AMP007") == []


def test_amp008_fixed_device_runs() -> None:
    source = """
    import torch

    def run():
        with torch.autocast(torch.device("cpu"), dtype=torch.bfloat16):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    """
    with pytest.raises(ValueError, match="device_type"):
        _run(source)
    fixed = _fix(source, "AMP008", unsafe=False)
    assert 'torch.autocast("cpu", dtype=torch.bfloat16)' in fixed
    assert _run(fixed)["result"] == torch.bfloat16


def test_amp008_tensor_device_fix_runs() -> None:
    source = """
    import torch

    def run():
        x = torch.ones(2, 2)
        with torch.autocast(x.device, dtype=torch.bfloat16):
            return (x @ x).dtype
    """
    fixed = _fix(source, "AMP008")
    assert "torch.autocast(x.device.type, dtype=torch.bfloat16)" in fixed
    assert _run(fixed)["result"] == torch.bfloat16


CPU_FP16_LOOP = """
import torch

def run():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(3):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return scaler.is_enabled(), scaler.get_scale()
"""


def test_amp017_named_device_enables_the_scaler_on_cpu() -> None:
    assert _codes(CPU_FP16_LOOP, "AMP017") == [8]
    fixed = _fix(CPU_FP16_LOOP, "AMP017", unsafe=False)
    assert 'scaler = torch.amp.GradScaler("cpu")' in fixed
    if not torch.cuda.is_available():
        assert _run(CPU_FP16_LOOP)["result"] == (False, 1.0)  # silently unscaled
    enabled, scale = _run(fixed)["result"]
    assert enabled and scale == 65536.0


def test_amp017_float32_cpu_autocast_is_really_disabled() -> None:
    source = """
    import torch

    def run():
        with torch.autocast("cpu", dtype=torch.float32):
            return torch.is_autocast_enabled("cpu")
    """
    assert _codes(source, "AMP017") == [5]
    assert _run(source)["result"] is False


def test_amp020_with_logits_fix_computes_the_same_loss() -> None:
    source = """
    import torch
    import torch.nn.functional as F

    def run():
        torch.manual_seed(0)
        logits, y = torch.randn(64) * 4, torch.rand(64).round()
        with torch.autocast("cuda", enabled=False):
            return F.binary_cross_entropy(torch.sigmoid(logits), y)
    """
    region = """
    import torch
    import torch.nn.functional as F

    with torch.autocast("cuda"):
        loss = F.binary_cross_entropy(torch.sigmoid(logits), y, reduction="mean")
    """
    assert _codes(region, "AMP020") == [6]
    fixed_region = _fix(region, "AMP020")
    assert 'F.binary_cross_entropy_with_logits(logits, y, reduction="mean")' in fixed_region
    assert _codes(source, "AMP020") == []  # autocast disabled there
    before = _run(source)["result"]
    after = _run(
        source.replace(
            "F.binary_cross_entropy(torch.sigmoid(logits), y)",
            "F.binary_cross_entropy_with_logits(logits, y)",
        )
    )["result"]
    assert torch.allclose(before, after, atol=1e-5)


CLAMP_FN = """
import torch

SEEN = []

class Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        SEEN.append(torch.is_autocast_enabled("cpu"))
        return grad * 2

def run():
    x = torch.ones(3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = Scale.apply(x)
    y.sum().backward()
    return SEEN[-1], x.grad
"""


def test_amp015_fix_runs_backward_under_the_forward_autocast_state() -> None:
    assert _codes(CLAMP_FN, "AMP015") == [19]
    fixed = _fix(CLAMP_FN, "AMP015", unsafe=False)
    assert '@torch.amp.custom_fwd(device_type="cpu")' in fixed
    assert '@torch.amp.custom_bwd(device_type="cpu")' in fixed
    seen_before, grad_before = _run(CLAMP_FN)["result"]
    seen_after, grad_after = _run(fixed)["result"]
    assert seen_before is False and seen_after is True
    assert torch.equal(grad_before, grad_after)


def test_amp007_fix_keeps_the_legacy_autocast_dtype_inside_another_region() -> None:
    # PixArt, coqui TTS: a legacy region inside another (accelerate's) region. The legacy
    # class passes its own dtype; the new one would take the enclosing region's.
    source = """
    import torch

    def run():
        a = torch.ones(2, 2)
        with torch.autocast("cpu", dtype=torch.float16):
            with torch.cpu.amp.autocast():
                return (a @ a).dtype
    """
    fixed = _fix(source, "AMP007", unsafe=False)
    assert 'with torch.amp.autocast("cpu", dtype=torch.bfloat16):' in fixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert _run(source)["result"] == torch.bfloat16
    assert _run(fixed)["result"] == torch.bfloat16
    # Without a dtype the new class would have made it float16: the fix names it.
    assert _run(fixed.replace(", dtype=torch.bfloat16", ""))["result"] == torch.float16


def test_amp006_message_names_the_optimizer_as_the_fix_writes_it() -> None:
    source = """
    import torch
    class Trainer:
        def step(self, loss):
            self.scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
    """
    (finding,) = lint_bytes(textwrap.dedent(source).encode(), "example.py", {"AMP006"}).findings
    assert "call `self.scaler.unscale_(self.optimizer)` before clipping" in finding.message
    assert "self.scaler.unscale_(self.optimizer)" in _fix(source, "AMP006")


def test_amp007_fix_of_a_call_with_one_argument_a_line_keeps_that_layout() -> None:
    source = """
    import torch
    with torch.cuda.amp.autocast(
        enabled=amp,  # --amp
    ):
        y = model(x)
    """
    assert _fix(source, "AMP007", unsafe=False) == textwrap.dedent(
        """
        import torch
        with torch.amp.autocast(
            "cuda",
            enabled=amp,  # --amp
            dtype=torch.float16,
        ):
            y = model(x)
        """
    )
