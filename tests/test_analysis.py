"""The semantic model on the idioms real training code uses (no rule involved)."""

from __future__ import annotations

import libcst as cst
import pytest

from amplint.analysis.model import ModuleModel
from amplint.analysis.values import AutocastRegion


def model_of(source: str) -> ModuleModel:
    module = cst.parse_module(source)
    return ModuleModel(module, module.code)


def regions(source: str) -> list[tuple[str | None, str | None, bool | None]]:
    """(device, dtype, enabled) of the autocast regions of the last `with` in ``source``."""
    model = model_of(source)
    last = model.index.withs[-1]
    return sorted(
        ((r.device, r.dtype, r.enabled) for r in model.autocast_regions(last)),
        key=repr,
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\nwith torch.autocast('cuda'): pass", [("cuda", "float16", True)]),
        ("import torch\nwith torch.amp.autocast('cpu'): pass", [("cpu", "bfloat16", True)]),
        (
            "from torch import autocast as ac\nwith ac(device_type='cuda', dtype=torch.half): pass",
            [("cuda", None, True)],  # `torch` itself is not imported here: dtype unknown
        ),
        (
            "import torch\nfrom torch import autocast as ac\n"
            "with ac(device_type='cuda', dtype=torch.half): pass",
            [("cuda", "float16", True)],
        ),
        (
            "from torch.cuda.amp import autocast\nwith autocast(args.amp): pass",
            [("cuda", "float16", None)],
        ),
        ("import torch.cpu.amp\nwith torch.cpu.amp.autocast(): pass", [("cpu", "bfloat16", True)]),
        (
            "import torch\nwith torch.autocast('cuda:0', torch.bfloat16): pass",
            [("cuda", "bfloat16", True)],
        ),
        ("import torch\nwith torch.autocast(f'cuda:{rank}'): pass", [(None, None, True)]),
        ("import torch\nwith torch.autocast(str(device)): pass", [(None, None, True)]),
        (
            "import torch\nDT = {'fp16': torch.float16}\n"
            "with torch.autocast('cuda', dtype=DT[cfg.dtype]): pass",
            [("cuda", None, True)],
        ),
        (
            "import torch\nwith torch.autocast('cuda', dtype=getattr(torch, cfg.dtype)): pass",
            [("cuda", None, True)],
        ),
        (
            "import torch\nwith torch.autocast('cuda', enabled=False): pass",
            [("cuda", "float16", False)],
        ),
        # Keywords forwarded from elsewhere may hold any dtype and `enabled=False`.
        ("import torch\nwith torch.autocast('cuda', **amp_kwargs): pass", [("cuda", None, None)]),
        (
            "import torch\nwith torch.autocast('cuda', dtype=torch.float16, **kw): pass",
            [("cuda", "float16", None)],
        ),
    ],
)
def test_autocast_arguments(source: str, expected: list[tuple[object, ...]]) -> None:
    assert regions(source) == expected


MAYBE_AMP = """\
import contextlib
import torch

def maybe_amp(enabled=False, dtype=None):
    return torch.autocast("cuda", enabled=enabled)

@contextlib.contextmanager
def forwarding(device_type="cuda", **kwargs):
    with torch.autocast(device_type, **kwargs):
        yield

def own_decision(enabled=False):
    enabled = enabled and torch.cuda.is_available()
    return torch.autocast("cuda", enabled=enabled)
"""


@pytest.mark.parametrize(
    ("call", "enabled"),
    [
        ("maybe_amp()", False),  # the parameter's default
        ("maybe_amp(False)", False),
        ("maybe_amp(True)", True),
        ("maybe_amp(enabled=True)", True),
        ("maybe_amp(args.amp)", None),
        ("maybe_amp(*flags)", None),
        ("forwarding()", True),  # autocast's own default
        ("forwarding(enabled=False)", False),
        ("forwarding('cpu', enabled=cfg.amp)", None),
        ("forwarding(**cfg)", None),
        ("own_decision(True)", None),  # reassigned in the body: the function decides
    ],
)
def test_a_helper_leaves_enabled_to_its_caller(call: str, enabled: bool | None) -> None:
    (region,) = regions(MAYBE_AMP + f"with {call}:\n    pass\n")
    assert region[2] is enabled


def test_variable_partial_and_nullcontext() -> None:
    source = """
import torch
from functools import partial
from contextlib import nullcontext, suppress
amp_autocast = partial(torch.autocast, device_type="cuda", dtype=torch.float16)
ctx = nullcontext() if device_type == "cpu" else amp_autocast()
off = suppress
with ctx:
    pass
"""
    assert regions(source) == [("cuda", "float16", True)]


def test_local_function_named_autocast_is_not_torch() -> None:
    source = """
import torch
def autocast(device_type="cuda", extra=None):
    return nullcontext()
with autocast():
    pass
"""
    assert regions(source) == []


def test_shadowing_inside_a_function() -> None:
    source = """
from torch import autocast
def train(autocast):
    with autocast():
        pass
"""
    assert regions(source) == []


def test_try_except_import_fallback_resolves_both_ways() -> None:
    source = """
try:
    from torch.amp import autocast
except ImportError:
    from torch.cuda.amp import autocast
with autocast("cuda"):
    pass
"""
    assert len(regions(source)) == 2


def test_method_returning_autocast_and_generator_context_manager() -> None:
    source = """
import contextlib
import torch
class Trainer:
    def autocast_context(self):
        return torch.autocast("cuda", dtype=torch.bfloat16)

    @contextlib.contextmanager
    def maybe_autocast(self):
        with torch.autocast("cuda"):
            yield

    def step(self):
        with self.autocast_context():
            pass
        with self.maybe_autocast():
            pass
"""
    model = model_of(source)
    first, second = model.index.withs[-2:]
    assert [r.dtype for r in model.autocast_regions(first)] == ["bfloat16"]
    assert [r.dtype for r in model.autocast_regions(second)] == ["float16"]


@pytest.mark.parametrize(
    ("source", "is_scaler"),
    [
        ("import torch\nscaler = torch.amp.GradScaler()\nscaler", True),
        ("from torch.cuda.amp import GradScaler as GS\ns = GS() if fp16 else None\ns", True),
        ("import torch\ndef f(scaler):\n    scaler", False),
        ("scaler = build_scaler()\nscaler", False),
        (
            "import torch\nclass T:\n    def __init__(self):\n"
            "        self._scaler = torch.GradScaler('cuda')\n"
            "    @property\n    def scaler(self):\n        return self._scaler\n"
            "    def go(self):\n        self.scaler",
            True,
        ),
    ],
)
def test_scaler_identification(source: str, is_scaler: bool) -> None:
    model = model_of(source)
    statement = model.module.body[-1]
    while not isinstance(statement, cst.SimpleStatementLine):
        statement = statement.body.body[-1]  # type: ignore[attr-defined]
    expression = statement.body[0].value  # type: ignore[attr-defined]
    assert model.is_scaler(expression) is is_scaler


def test_region_values_are_comparable() -> None:
    model = model_of("import torch\nwith torch.autocast('cuda'): pass")
    (region,) = model.autocast_regions(model.index.withs[0])
    assert isinstance(region, AutocastRegion) and region.may_be_enabled


# -- one home for shared facts ---------------------------------------------------------------


def _last_call(model: ModuleModel) -> cst.Call:
    return model.index.calls[-1]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\nscaler = torch.amp.GradScaler()\nscaler.step(o)", True),
        ("import torch\nscaler = torch.amp.GradScaler(enabled=False)\nscaler.step(o)", True),
        ("def f(grad_scaler):\n    grad_scaler.step(o)", True),
        (
            "from sklearn.preprocessing import StandardScaler\n"
            "scaler = StandardScaler()\nscaler.step(o)",
            False,
        ),
        ("def f(standard_scaler):\n    standard_scaler.step(o)", False),
        # A wrapper class of the module (timm's NativeScaler and kin) is not torch's class.
        ("class LossScaler:\n    pass\nloss_scaler = LossScaler()\nloss_scaler.step(o)", False),
        ("def f(optimizer):\n    optimizer.step()", False),
    ],
)
def test_one_scaler_answer_for_every_rule(source: str, expected: bool) -> None:
    from amplint.analysis.scalers import scaler_like

    model = model_of(source)
    target = _last_call(model).func.value  # type: ignore[attr-defined]
    assert scaler_like(model, target) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import torch\ntorch.nn.utils.clip_grad_norm_(ps, 1.0)", "function"),
        ("from torch.nn.utils import clip_grad_value_ as clip\nclip(ps, 1.0)", "function"),
        ("model.clip_grad_norm_(1.0)", "method"),
        ("accelerator.clip_grad_norm_(ps, 1.0)", "framework"),
        ("clip_grads(ps)", "framework"),
        ("model.step()", None),
    ],
)
def test_one_clip_detector(source: str, expected: str | None) -> None:
    from amplint.analysis.clipping import clip_kind

    model = model_of(source)
    assert clip_kind(model, _last_call(model)) == expected


def test_base_class_attributes_and_methods_are_seen_from_a_subclass() -> None:
    model = model_of(
        "import torch\n"
        "class Base:\n"
        "    def __init__(self):\n"
        "        self.scaler = torch.amp.GradScaler()\n"
        "    def helper(self):\n"
        "        pass\n"
        "class Child(Base):\n"
        "    def run(self):\n"
        "        self.helper()\n"
        "        self.scaler.update()\n"
    )
    helper_call, update_call = model.index.calls[-2], model.index.calls[-1]
    assert model.helper_of(helper_call) is model.index.class_by_name["Base"].methods["helper"]
    assert model.is_scaler(update_call.func.value)  # type: ignore[attr-defined]
