"""Scaler lifecycle rules (AMP009, AMP010, AMP012, AMP013, AMP014) against real torch.

Each test lints a small CPU training script, applies amplint's fix, and runs both versions
with torch to show the finding is a real failure and the fixed script follows PyTorch's AMP
recipe. CPU float16 autocast and ``torch.amp.GradScaler("cpu")`` stand in for CUDA.
"""

from __future__ import annotations

import pytest

from amplint.engine.run import fix_bytes, lint_bytes

torch = pytest.importorskip("torch")

SETUP = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
data = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(6)]
"""


def _codes(source: str, code: str) -> list[int]:
    return [f.location.row for f in lint_bytes(source.encode(), "t.py", {code}).findings]


def _fixed(source: str, code: str, unsafe: bool = False) -> str:
    result = fix_bytes(source.encode(), "t.py", {code}, unsafe=unsafe)
    assert result.data is not None, f"{code} offered no fix"
    return result.data.decode()


def _run(source: str) -> dict:
    namespace: dict = {"__name__": "amplint_test"}
    exec(compile(source, "t.py", "exec"), namespace)
    return namespace


def _weights(namespace: dict) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in namespace["model"].parameters()])


# -- AMP009 ------------------------------------------------------------------------------

HALF = (
    SETUP
    + """
model.half()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
)


def test_amp009_half_parameters_make_the_scaler_raise_and_the_fix_trains() -> None:
    assert _codes(HALF, "AMP009") == [7]
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        _run(HALF)
    assert fix_bytes(HALF.encode(), "t.py", {"AMP009"}).data is None  # the fix is unsafe
    fixed = _fixed(HALF, "AMP009", unsafe=True)
    assert "model.half()" not in fixed
    namespace = _run(fixed)
    assert all(p.dtype == torch.float32 for p in namespace["model"].parameters())
    assert _codes(fixed, "AMP009") == []


def test_amp009_fused_optimizer_accepts_half_gradients_silently() -> None:
    """Why the docs call the fused case worse: no error at all, float16 weights train."""
    source = HALF.replace(
        "torch.optim.SGD(model.parameters(), lr=0.1)",
        "torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)",
    )
    assert _codes(source, "AMP009") == [7]
    try:
        namespace = _run(source)
    except (RuntimeError, ValueError) as error:  # fused kernels this build lacks on CPU
        pytest.skip(f"fused Adam unavailable here: {error}")
    assert all(p.dtype == torch.float16 for p in namespace["model"].parameters())


# -- AMP010 ------------------------------------------------------------------------------

PER_STEP = (
    SETUP
    + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
start = [p.detach().clone() for p in model.parameters()]
for x, y in data * 4:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
)


def _moved(namespace: dict) -> bool:
    after = list(namespace["model"].parameters())
    return any(not torch.equal(a, b) for a, b in zip(namespace["start"], after, strict=True))


def test_amp010_fresh_scaler_skips_every_step_and_the_hoisted_one_recovers() -> None:
    assert _codes(PER_STEP, "AMP010") == [10]
    broken = _run(PER_STEP)
    assert not _moved(broken), "every step overflows at the initial scale and is skipped"
    fixed = _fixed(PER_STEP, "AMP010")
    assert fixed.index("GradScaler") < fixed.index("for x, y in data * 4")
    repaired = _run(fixed)
    assert _moved(repaired), "the scale backs off across steps and training proceeds"
    assert repaired["scaler"].get_scale() < 2.0**24
    assert _codes(fixed, "AMP010") == []


# -- AMP012 ------------------------------------------------------------------------------

STEP_INSIDE = (
    SETUP
    + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    with torch.autocast("cpu", dtype=torch.float16):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    with torch.autocast("cpu", dtype=torch.float16):
        scaler.step(optimizer)
        scaler.update()
"""
)

RECIPE = (
    SETUP
    + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""
)


def test_amp012_fix_gives_the_recipe_and_runs() -> None:
    # zero_grad() alone inside autocast is harmless: only the steps are reported and moved.
    assert _codes(STEP_INSIDE, "AMP012") == [15, 16]
    fixed = _fixed(STEP_INSIDE, "AMP012")
    assert fixed == STEP_INSIDE.replace(
        '    with torch.autocast("cpu", dtype=torch.float16):\n        scaler.step',
        "    scaler.step",
    ).replace("        scaler.update()", "    scaler.update()")
    assert torch.equal(_weights(_run(fixed)), _weights(_run(RECIPE)))


def test_amp012_leaves_steps_after_a_backward_to_amp001() -> None:
    source = STEP_INSIDE.replace(
        "        loss = torch.nn.functional.mse_loss(model(x).float(), y)\n    scaler",
        "        loss = torch.nn.functional.mse_loss(model(x).float(), y)\n        scaler",
    )
    both = fix_bytes(source.encode(), "t.py", {"AMP001", "AMP012"}).data
    assert both is not None
    assert lint_bytes(both, "t.py", {"AMP001", "AMP012"}).findings == []
    _run(both.decode())


# -- AMP013 ------------------------------------------------------------------------------

CHECKPOINT = (
    SETUP
    + """
import io
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30)
for x, y in data:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
buffer = io.BytesIO()
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
buffer.seek(0)
checkpoint = torch.load(buffer)
"""
)


def test_amp013_fix_saves_the_scale_and_a_resumed_scaler_restores_it() -> None:
    assert _codes(CHECKPOINT, "AMP013") == [18]
    assert "scaler" not in _run(CHECKPOINT)["checkpoint"]
    fixed = _fixed(CHECKPOINT, "AMP013")
    namespace = _run(fixed)
    resumed = torch.amp.GradScaler("cpu", init_scale=2.0**30)
    resumed.load_state_dict(namespace["checkpoint"]["scaler"])
    assert resumed.get_scale() == namespace["scaler"].get_scale() < 2.0**30
    assert _codes(fixed, "AMP013") == []


# -- AMP014 ------------------------------------------------------------------------------

BF16 = (
    SETUP
    + """
amp_dtype = torch.bfloat16
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    with torch.autocast("cpu", dtype=amp_dtype):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
)


def test_amp014_fix_disables_the_scaler_for_bfloat16_only() -> None:
    assert _codes(BF16, "AMP014") == [9]
    fixed = _fixed(BF16, "AMP014")
    assert 'GradScaler("cpu", enabled=(amp_dtype == torch.float16))' in fixed
    namespace = _run(fixed)
    assert not namespace["scaler"].is_enabled()
    plain = _run(
        fixed.replace("scaler.scale(loss).backward()", "loss.backward()")
        .replace("scaler.step(optimizer)", "optimizer.step()")
        .replace("    scaler.update()\n", "")
    )
    assert torch.equal(_weights(namespace), _weights(plain))
    as_fp16 = _run(fixed.replace("amp_dtype = torch.bfloat16", "amp_dtype = torch.float16"))
    assert as_fp16["scaler"].is_enabled()
    assert _codes(fixed, "AMP014") == []


# -- idioms of real training code --------------------------------------------------------------

LIFECYCLE = {"AMP009", "AMP010", "AMP012", "AMP013", "AMP014"}


def _all(source: str) -> list[tuple[int, str]]:
    findings = lint_bytes(source.encode(), "t.py", LIFECYCLE).findings
    return [(f.location.row, f.code) for f in findings]


NO_FINDING = {
    # AMP009: pure float16 training in one function, AMP in another.
    "half-in-another-function": """
import torch
def train_pure_fp16(model, loader):
    model.half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x in loader:
        model(x).backward()
        optimizer.step()

def train_amp(model, loader):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler()
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
    # AMP009: the cast and the scaler live in the two branches of one test.
    "half-in-the-branch-without-scaler": """
import torch
class Trainer:
    def __init__(self, model, cfg):
        self.model = model
        if not cfg.amp:
            self.model.half()
        self.optimizer = torch.optim.AdamW(self.model.parameters())
        self.scaler = torch.amp.GradScaler() if cfg.amp else None

    def step(self, x):
        if self.scaler is None:
            self.model(x).backward()
            self.optimizer.step()
        else:
            self.scaler.scale(self.model(x)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
""",
    # AMP009: half inference copy of the trained model inside the epoch loop, cast back.
    "half-eval-round-trip": """
import torch
scaler = torch.amp.GradScaler()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    model.half()
    evaluate(model)
    model.float()
""",
    # AMP010: built on the first iteration only; rebuilt in an except handler.
    "scaler-first-iteration": """
import torch
for i, (x, y) in enumerate(loader):
    if i == 0:
        scaler = torch.amp.GradScaler("cuda")
    try:
        scaler.scale(model(x)).backward()
    except RuntimeError:
        scaler = torch.amp.GradScaler("cuda", init_scale=1024.0)
    scaler.step(optimizer)
    scaler.update()
""",
    # AMP010: a trainer builds its scaler in __init__; the epoch loop calls train_epoch.
    "scaler-in-init": """
import torch
class Trainer:
    def __init__(self, cfg):
        self.scaler = torch.amp.GradScaler(enabled=cfg.amp)

    def fit(self):
        for epoch in range(self.epochs):
            self.train_epoch()

    def train_epoch(self):
        for batch in self.loader:
            with torch.autocast("cuda", enabled=self.cfg.amp):
                loss = self.model(batch)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
""",
    # AMP012: a bfloat16 teacher under no_grad; EMA and scheduler steps in a region.
    "teacher-ema-scheduler": """
import torch
scaler = torch.amp.GradScaler()
for x in loader:
    with torch.no_grad(), torch.autocast("cuda"):
        target = teacher(x)
    with torch.autocast("cuda"):
        loss = student(x, target)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    with torch.autocast("cuda"):
        ema.update(student)
        lr_scheduler.step()
""",
    # AMP012: a step in a closure defined under autocast, and a region disabled inside.
    "closure-and-disabled-region": """
import torch
from torch.amp import autocast
with autocast("cuda"):
    def closure():
        optimizer.zero_grad()
        return model(x)
    with autocast("cuda", enabled=False):
        optimizer.step()
optimizer.step(closure)
""",
    # AMP013: a checkpoint helper saves the scaler when it is given one.
    "checkpoint-helper-with-optional-scaler": """
import torch
def save_checkpoint(path, model, optimizer, scaler=None):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    torch.save(state, path)

def train(model, optimizer, scaler):
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    save_checkpoint("last.pt", model, optimizer, scaler)
""",
    # AMP013: a wrapper's own state_dict under timm's key, two optimizers.
    "wrapper-state-dict": """
import torch
class NativeScaler:
    state_dict_key = "amp_scaler"
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")
    def __call__(self, loss, optimizer):
        self._scaler.scale(loss).backward()
        self._scaler.step(optimizer)
        self._scaler.update()
    def state_dict(self):
        return self._scaler.state_dict()

loss_scaler = NativeScaler()
torch.save(
    {"g": opt_g.state_dict(), "d": opt_d.state_dict(), "amp_scaler": loss_scaler.state_dict()},
    "ckpt.pt",
)
""",
    # AMP014: the scaler is built only for float16 (Lightning's precision plugins).
    "scaler-only-for-fp16-precision": """
import torch
class MixedPrecision:
    def __init__(self, precision, device):
        self.precision = precision
        self.device = device
        self.scaler = None
        if precision == "16-mixed":
            self.scaler = torch.amp.GradScaler(device=device)

    def forward_context(self):
        return torch.autocast(self.device, dtype=torch.bfloat16)

    def backward(self, loss):
        with torch.autocast(self.device, dtype=torch.bfloat16):
            out = loss * 1
        self.scaler.scale(out).backward()
""",
    # AMP014: dtype decided by a flag; a float16 region entered by a decorator.
    "dtype-from-flag-and-decorator": """
import torch
amp_dtype = torch.bfloat16 if args.bf16 else torch.float16
scaler = torch.amp.GradScaler()

@torch.autocast("cuda")
def forward(x):
    return model(x)

for x in loader:
    with torch.autocast("cuda", dtype=amp_dtype):
        loss = forward(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
}


@pytest.mark.parametrize("name", sorted(NO_FINDING))
def test_lifecycle_rules_stay_quiet_on_correct_idioms(name: str) -> None:
    assert _all(NO_FINDING[name]) == []


def test_amp009_same_flag_and_fused_optimizer_on_a_self_attribute() -> None:
    source = """
import torch
class Trainer:
    def __init__(self, model, cfg):
        self.model = model.cuda()
        if cfg.fp16:
            self.model = self.model.half()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), fused=True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.fp16)

    def step(self, x):
        self.scaler.scale(self.model(x)).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def evaluate(self, x):
        self.model.half()
        out = self.model(x)
        self.model.float()
        return out
"""
    findings = lint_bytes(source.encode(), "t.py", {"AMP009"}).findings
    assert [f.location.row for f in findings] == [7]
    assert "fused optimizer" in findings[0].message
    fixed = _fixed(source, "AMP009", unsafe=True)
    assert fixed == source.replace("            self.model = self.model.half()\n", "").replace(
        "if cfg.fp16:\n", "if cfg.fp16:\n            pass\n"
    )


def test_amp009_flag_gated_fix_runs_on_cpu() -> None:
    source = (
        SETUP
        + """
fp16 = True
if fp16:
    model = model.half()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", enabled=fp16)
for x, y in data[:3]:
    with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
    )
    assert _codes(source, "AMP009") == [9]
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        _run(source)
    fixed = _fixed(source, "AMP009", unsafe=True)
    assert fixed == source.replace("    model = model.half()\n", "    pass\n")
    namespace = _run(fixed)
    assert all(p.dtype == torch.float32 for p in namespace["model"].parameters())


def test_amp010_wrapper_class_call_is_per_iteration() -> None:
    source = """
import torch
class NativeScaler:
    def __call__(self, loss, optimizer):
        scaler = torch.amp.GradScaler("cuda")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

loss_scaler = NativeScaler()
for x in loader:
    loss_scaler(model(x), optimizer)
"""
    findings = lint_bytes(source.encode(), "t.py", {"AMP010"}).findings
    assert [f.location.row for f in findings] == [5]
    assert findings[0].fix is None
    assert "`__call__`" in findings[0].message


def test_amp010_nested_epoch_loop_fix_runs_on_cpu() -> None:
    source = (
        SETUP
        + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
start = [p.detach().clone() for p in model.parameters()]
amp = dict(device_type="cpu", dtype=torch.float16)
for epoch in range(2):
    for x, y in data[:3]:
        # fresh scaler
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
        with torch.autocast(**amp):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
"""
    )
    assert _codes(source, "AMP010") == [13]
    fixed = _fixed(source, "AMP010")
    create = '# fresh scaler\nscaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)\n'
    indented = "".join(f"        {line}\n" for line in create.splitlines())
    assert fixed == source.replace(indented, "").replace(
        "for epoch in range(2):\n", create + "for epoch in range(2):\n"
    )
    namespace = _run(fixed)
    assert namespace["scaler"].get_scale() < 2.0**24  # one scaler saw every step
    assert _codes(fixed, "AMP010") == []


def test_amp012_nullcontext_or_autocast_variable_fix_runs_on_cpu() -> None:
    source = (
        SETUP
        + """
from contextlib import nullcontext
device_type = "cpu"
use_amp = True
ctx = torch.autocast(device_type, dtype=torch.bfloat16) if use_amp else nullcontext()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in data[:3]:
    with ctx:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    loss.backward()
    with ctx:
        optimizer.step()
"""
    )
    assert _codes(source, "AMP012") == [18]
    fixed = _fixed(source, "AMP012")
    unwrapped = source.replace(
        "    with ctx:\n        optimizer.step()\n", "    optimizer.step()\n"
    )
    assert fixed == unwrapped
    _run(fixed)
    assert _codes(fixed, "AMP012") == []


def test_amp012_two_optimizers_in_a_loop_reported_without_a_fix() -> None:
    source = """
import torch
from functools import partial
amp = partial(torch.autocast, device_type="cuda", dtype=torch.float16)
scaler = torch.amp.GradScaler()
for x in loader:
    with amp():
        loss = model(x)
    scaler.scale(loss).backward()
    with amp():
        for opt in (opt_g, opt_d):
            scaler.step(opt)
        scaler.update()
"""
    findings = lint_bytes(source.encode(), "t.py", {"AMP012"}).findings
    assert [f.location.row for f in findings] == [12, 13]
    fixed = _fixed(source, "AMP012", unsafe=True)
    assert (
        "    for opt in (opt_g, opt_d):\n        scaler.step(opt)\n    scaler.update()\n" in fixed
    )


def test_amp012_helper_backward_leaves_the_steps_to_amp001() -> None:
    source = """
import torch
class T:
    def __init__(self):
        self.scaler = torch.amp.GradScaler()
    def backward(self, loss):
        self.scaler.scale(loss).backward()
    def step(self, x):
        with torch.autocast("cuda"):
            loss = self.model(x)
            self.backward(loss)
            self.scaler.step(self.optimizer)
            self.scaler.update()
"""
    assert _codes(source, "AMP012") == []
    both = fix_bytes(source.encode(), "t.py", {"AMP001", "AMP012"}).data
    assert both is not None
    assert both.decode() == source.replace(
        "            self.backward(loss)\n            self.scaler.step(self.optimizer)\n"
        "            self.scaler.update()\n",
        "        self.backward(loss)\n        self.scaler.step(self.optimizer)\n"
        "        self.scaler.update()\n",
    )


def test_amp013_trainer_class_fix_round_trips_the_scale_on_cpu() -> None:
    source = (
        SETUP
        + """
import io
class Trainer:
    def __init__(self, model):
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30)

    def step(self, x, y):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.mse_loss(self.model(x).float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()

    def save(self, buffer):
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        torch.save(state, buffer)

trainer = Trainer(model)
for x, y in data[:3]:
    trainer.step(x, y)
buffer = io.BytesIO()
trainer.save(buffer)
buffer.seek(0)
checkpoint = torch.load(buffer)
"""
    )
    assert _codes(source, "AMP013") == [27]
    fixed = _fixed(source, "AMP013")
    assert fixed == source.replace(
        '            "optimizer": self.optimizer.state_dict(),\n',
        '            "optimizer": self.optimizer.state_dict(),\n'
        '            "scaler": self.scaler.state_dict(),\n',
    )
    namespace = _run(fixed)
    resumed = torch.amp.GradScaler("cpu")
    resumed.load_state_dict(namespace["checkpoint"]["scaler"])
    assert resumed.get_scale() == namespace["trainer"].scaler.get_scale() < 2.0**30


def test_amp013_two_scalers_and_the_load_side_are_reported_without_a_fix() -> None:
    source = """
import torch
class GANTrainer:
    def __init__(self):
        self.scaler_g = torch.amp.GradScaler()
        self.scaler_d = torch.amp.GradScaler()
    def step(self, loss_g, loss_d):
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
    def save(self, path):
        torch.save({"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}, path)
    def load(self, path):
        checkpoint = torch.load(path)
        self.opt_g.load_state_dict(checkpoint["opt_g"])
"""
    findings = lint_bytes(source.encode(), "t.py", {"AMP013"}).findings
    assert [(f.location.row, f.fix) for f in findings] == [(15, None), (18, None)]


def test_amp014_partial_autocast_unsafe_fix_runs_on_cpu() -> None:
    source = (
        SETUP
        + """
import functools
amp_autocast = functools.partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data[:3]:
    with amp_autocast():
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
    )
    assert _codes(source, "AMP014") == [10]
    assert fix_bytes(source.encode(), "t.py", {"AMP014"}).data is None  # unsafe only
    fixed = _fixed(source, "AMP014", unsafe=True)
    assert fixed == source.replace('GradScaler("cpu")', 'GradScaler("cpu", enabled=False)')
    namespace = _run(fixed)
    assert not namespace["scaler"].is_enabled()
    assert _codes(fixed, "AMP014") == []
