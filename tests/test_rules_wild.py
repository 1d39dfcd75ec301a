"""What real training code taught the rules: false alarms and misses found in the wild.

Each case is written from scratch in the shape the pattern takes in real libraries and
training repositories (see the "Wild corpus" section of benchmarks/README.md); none is
copied from them. A case states the lines a rule reports, so a silent rule fails a miss
case and a noisy one fails a false-alarm case.
"""

from __future__ import annotations

import textwrap

import pytest

from amplint.engine.run import fix_bytes, lint_bytes


def rows(source: str, code: str) -> list[int]:
    text = textwrap.dedent(source).lstrip("\n")
    return [f.location.row for f in lint_bytes(text.encode(), "case.py", {code}).findings]


def fixed(source: str, code: str, unsafe: bool = True) -> str | None:
    text = textwrap.dedent(source).lstrip("\n")
    data = fix_bytes(text.encode(), "case.py", {code}, unsafe=unsafe).data
    return data.decode() if data is not None else None


# -- AMP005: identity wrappers, and a helper handed the scaled loss ----------------------------

CAST_SCALED = """
import torch
from typing import cast

def make_step(model, optimizer, scaler):
    def step(batch):
        with torch.autocast("cuda"):
            loss = model(batch)
        cast(torch.Tensor, scaler.scale(loss)).backward()
        scaler.step(optimizer)
        scaler.update()
    return step
"""


def test_amp005_sees_through_typing_cast() -> None:
    assert rows(CAST_SCALED, "AMP005") == []
    assert fixed(CAST_SCALED, "AMP005") is None


def test_amp005_quiet_when_an_unknown_wrapper_holds_the_scaled_loss() -> None:
    # Whether `shard_aware(...)` returns the scaled tensor is not known: the premise of the
    # finding (an unscaled backward) is not certain, so neither finding nor fix.
    source = """
    import torch

    def train(model, loader, optimizer, scaler):
        for batch in loader:
            shard_aware(scaler.scale(model(batch))).backward()
            scaler.step(optimizer)
            scaler.update()
    """
    assert rows(source, "AMP005") == []


HELPER_GETS_SCALED = """
import torch

class Runner:
    def run_backward(self, value):
        value.backward()

    def fit(self, loader):
        scaler = torch.amp.GradScaler("cuda")
        for batch in loader:
            with torch.autocast("cuda"):
                loss = self.model(batch)
            self.run_backward(scaler.scale(loss))
            scaler.step(self.optimizer)
            scaler.update()
"""


def test_amp005_helper_backward_of_a_scaled_argument_is_scaled() -> None:
    assert rows(HELPER_GETS_SCALED, "AMP005") == []


def test_amp005_helper_backward_of_a_plain_argument_is_still_reported() -> None:
    source = HELPER_GETS_SCALED.replace(
        "self.run_backward(scaler.scale(loss))", "self.run_backward(loss)"
    )
    assert rows(source, "AMP005") == [5]


# -- AMP007: what runs on a current torch ------------------------------------------------------


@pytest.mark.parametrize(
    "handler", ["except Exception:", "except:", "except (ImportError, AttributeError):"]
)
def test_amp007_fallback_import_in_a_broad_except_is_not_reported(handler: str) -> None:
    source = f"""
    import torch
    try:
        from torch.amp import GradScaler
    {handler}
        from torch.cuda.amp import GradScaler

    scaler = GradScaler()
    """
    assert rows(source, "AMP007") == []


LEGACY_ALIAS_FALLBACK = """
import torch
from torch.cuda.amp.grad_scaler import GradScaler as LegacyScaler

try:
    from torch.amp.grad_scaler import GradScaler
except Exception:
    GradScaler = LegacyScaler

def pick(sharded):
    if sharded:
        return GradScaler("cuda")
    return LegacyScaler()
"""


def test_amp007_fallback_assignment_quiet_but_a_direct_legacy_call_reported() -> None:
    # The assignment only runs when the new class is missing; the last line builds the
    # deprecated class on every torch.
    assert rows(LEGACY_ALIAS_FALLBACK, "AMP007") == [12]


ANNOTATED = """
import torch

class Loop:
    scaler: torch.cuda.amp.GradScaler | None = None

    def attach(self, scaler: "torch.cuda.amp.GradScaler") -> None:
        self.scaler = scaler
"""


def test_amp007_an_annotation_alone_is_not_a_finding() -> None:
    assert rows(ANNOTATED, "AMP007") == []


def test_amp007_annotation_rewritten_with_a_real_use() -> None:
    source = """
    import torch

    class Loop:
        scaler: torch.cuda.amp.GradScaler

        def __init__(self) -> None:
            self.scaler = torch.cuda.amp.GradScaler()
    """
    assert rows(source, "AMP007") == [7]
    result = fixed(source, "AMP007")
    assert result is not None
    assert "torch.cuda.amp" not in result


# A tracer's table of the context managers it knows, written with both spellings: the
# legacy class is only compared against, never built, so nothing warns.
RECOGNISED_CONTEXTS = """
import torch
import torch.fx

KNOWN = dict.fromkeys([torch.amp.autocast, torch.cuda.amp.autocast, torch.no_grad])
IGNORED = {torch.get_autocast_gpu_dtype, torch.is_autocast_cpu_enabled}
NAMES = {torch.cpu.amp.autocast: "cpu"}

def handles(fn):
    if fn in (torch.amp.autocast, torch.cuda.amp.autocast):
        return True
    return fn is torch.cpu.amp.autocast
"""


def test_amp007_a_legacy_object_only_compared_or_listed_is_not_a_finding() -> None:
    assert rows(RECOGNISED_CONTEXTS, "AMP007") == []


def test_amp007_building_the_listed_object_is_still_reported() -> None:
    source = (
        RECOGNISED_CONTEXTS
        + """
def run(model, x):
    with torch.cuda.amp.autocast():
        return model(x)
"""
    )
    assert rows(source, "AMP007") == [14]
    # The table must keep naming the legacy class: the fix rewrites the real use only.
    result = fixed(source, "AMP007")
    assert result is not None
    assert "KNOWN = dict.fromkeys([torch.amp.autocast, torch.cuda.amp.autocast," in result
    assert 'with torch.amp.autocast("cuda", dtype=torch.float16):' in result


@pytest.mark.parametrize(
    "extra", ["import torch.distributed", "import torch.utils.checkpoint", "import torch.nn as nn"]
)
def test_amp007_sees_torch_bound_by_several_imports(extra: str) -> None:
    source = f"""
    import torch
    {extra}

    scaler = torch.cuda.amp.GradScaler()
    with torch.cuda.amp.autocast():
        pass
    """
    assert rows(source, "AMP007") == [4, 5]


@pytest.mark.parametrize(
    "guard",
    [
        'hasattr(torch, "npu")',
        "is_torch_npu_available()",
        'hasattr(model, "module")',
        "is_torch_xla_available()",
    ],
)
def test_amp007_guard_that_is_not_about_torch_version_does_not_hide_it(guard: str) -> None:
    source = f"""
    import torch

    def build(model):
        if {guard}:
            return None
        return torch.cuda.amp.GradScaler()
    """
    assert rows(source, "AMP007") == [6]


@pytest.mark.parametrize(
    "guard",
    [
        'hasattr(torch.amp, "GradScaler")',
        'hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler")',
        'version.parse(torch.__version__) >= version.parse("2.3")',
        'is_torch_greater_or_equal("2.4")',
        "TORCH_VERSION < (2, 3)",
        "TORCH_2_4",
        "not _TORCH_1_13",
    ],
)
def test_amp007_real_version_or_presence_check_keeps_the_legacy_branch_quiet(guard: str) -> None:
    source = f"""
    import torch
    from packaging import version

    def build():
        if {guard}:
            return torch.amp.GradScaler("cuda")
        else:
            return torch.cuda.amp.GradScaler()
    """
    assert rows(source, "AMP007") == []


def test_amp007_version_flag_in_a_conditional_expression_is_a_guard() -> None:
    source = """
    import torch

    scaler = torch.amp.GradScaler("cuda") if TORCH_2_4 else torch.cuda.amp.GradScaler()
    """
    assert rows(source, "AMP007") == []


# -- AMP010: only lazy initialisation is exempt ------------------------------------------------


def test_amp010_construction_under_an_ordinary_if_in_the_loop_is_reported() -> None:
    source = """
    import torch

    for step, batch in enumerate(loader):
        if use_amp and step >= warmup_steps:
            scaler = torch.amp.GradScaler("cuda")
        scaler.scale(model(batch)).backward()
        scaler.step(optimizer)
        scaler.update()
    """
    assert rows(source, "AMP010") == [5]


@pytest.mark.parametrize(
    ("test", "after"),
    [
        ("scaler is None", ""),
        ("not built", "built = True"),
        ("step == 0", ""),
        ("first_iteration", "first_iteration = False"),
    ],
)
def test_amp010_lazy_initialisation_is_exempt(test: str, after: str) -> None:
    source = f"""
    import torch

    scaler = None
    built = False
    first_iteration = True
    for step, batch in enumerate(loader):
        if {test}:
            scaler = torch.amp.GradScaler("cuda")
            {after}
        scaler.scale(model(batch)).backward()
        scaler.step(optimizer)
        scaler.update()
    """
    assert rows(source, "AMP010") == []


# -- AMP012: zero_grad alone -------------------------------------------------------------------


def test_amp012_zero_grad_alone_inside_autocast_is_not_reported() -> None:
    source = """
    import torch

    for x, y in loader:
        with torch.autocast("cuda"):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    """
    assert rows(source, "AMP012") == []


# -- AMP013 --------------------------------------------------------------------------------------


def test_amp013_one_finding_for_one_missing_restore() -> None:
    source = """
    import torch

    class Trainer:
        def __init__(self):
            self.scaler = torch.amp.GradScaler("cuda")

        def step(self, loss):
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

        def resume(self, path):
            state = torch.load(path)
            if self.use_zero:
                self.engine.optimizer.load_state_dict(state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.model.load_state_dict(state["model"])
    """
    assert rows(source, "AMP013") == [15]


RELOADED_NAME = """
import torch

scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
if resume:
    ckpt = torch.load(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    ckpt = None
for step in range(steps):
    scaler.scale(model(next(data))).backward()
    scaler.step(optimizer)
    scaler.update()
    if step % 1000 == 0:
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        torch.save(ckpt, path)
"""


def test_amp013_name_bound_twice_still_checks_the_save_side() -> None:
    assert rows(RELOADED_NAME, "AMP013") == [7, 15]


def test_amp013_dataclass_checkpoint_is_seen() -> None:
    source = """
    import torch
    from dataclasses import asdict, dataclass

    @dataclass
    class State:
        weights: dict
        optim: dict
        epoch: int

    def fit(model, optimizer, loader, epochs):
        scaler = torch.amp.GradScaler("cuda")
        for epoch in range(epochs):
            for batch in loader:
                scaler.scale(model(batch)).backward()
                scaler.step(optimizer)
                scaler.update()
            state = State(weights=model.state_dict(), optim=optimizer.state_dict(), epoch=epoch)
            torch.save(asdict(state), "last.pt")
    """
    assert rows(source, "AMP013") == [18]


def test_amp013_dataclass_checkpoint_with_the_scaler_is_quiet() -> None:
    source = """
    import torch
    from typing import NamedTuple

    class State(NamedTuple):
        weights: dict
        optim: dict
        scaler: dict

    def fit(model, optimizer, loader, epochs):
        scaler = torch.amp.GradScaler("cuda")
        for epoch in range(epochs):
            for batch in loader:
                scaler.scale(model(batch)).backward()
                scaler.step(optimizer)
                scaler.update()
            state = State(model.state_dict(), optimizer.state_dict(), scaler.state_dict())
            torch.save(state._asdict(), "last.pt")
    """
    assert rows(source, "AMP013") == []


HELPER_SAVE = """
import torch

def write_checkpoint(model, optimizer, path):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)

def fit(model, optimizer, loader, epochs):
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        for batch in loader:
            scaler.scale(model(batch)).backward()
            scaler.step(optimizer)
            scaler.update()
        write_checkpoint(model, optimizer, f"epoch{epoch}.pt")
"""


def test_amp013_same_module_helper_called_without_the_scaler() -> None:
    assert rows(HELPER_SAVE, "AMP013") == [13]


def test_amp013_same_module_helper_given_the_scaler_is_quiet() -> None:
    source = HELPER_SAVE.replace(
        "def write_checkpoint(model, optimizer, path):\n"
        '    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)',
        "def write_checkpoint(model, optimizer, path, scaler=None):\n"
        '    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}\n'
        "    if scaler is not None:\n"
        '        state["scaler"] = scaler.state_dict()\n'
        "    torch.save(state, path)",
    ).replace(
        'write_checkpoint(model, optimizer, f"epoch{epoch}.pt")',
        'write_checkpoint(model, optimizer, f"epoch{epoch}.pt", scaler)',
    )
    assert rows(source, "AMP013") == []


# -- AMP016 --------------------------------------------------------------------------------------


def test_amp016_unscale_every_micro_batch_behind_an_else_branch() -> None:
    source = """
    import torch

    for i, batch in enumerate(loader):
        with torch.autocast("cuda"):
            loss = model(batch) / accum
        scaler.scale(loss).backward()
        if accum > 1:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if (i + 1) % accum == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        else:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    """
    assert rows(source, "AMP016") == [8]


# -- AMP021 --------------------------------------------------------------------------------------

SYNCED = """
import torch

for batch in loader:
    with torch.autocast("cuda"):
        loss = model(batch)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    {sync}
    print(f"loss scale {scaler.get_scale()}")
"""


@pytest.mark.parametrize("sync", ["losses.append(loss.item())", "torch.cuda.synchronize()"])
def test_amp021_quiet_when_the_iteration_synchronises_anyway(sync: str) -> None:
    assert rows(SYNCED.replace("{sync}", sync), "AMP021") == []


def test_amp021_a_conditional_sync_does_not_excuse_the_read() -> None:
    source = SYNCED.replace("{sync}", "if window_full:\n        print(loss.item())")
    assert rows(source, "AMP021") == [11]


def test_amp021_a_sync_after_the_read_does_not_excuse_it() -> None:
    source = SYNCED.replace("    {sync}\n", "").replace(
        'get_scale()}")\n', 'get_scale()}")\n    torch.cuda.synchronize()\n'
    )
    assert rows(source, "AMP021") == [9]


def test_amp021_cpu_scaler_read_costs_nothing() -> None:
    source = """
    import torch

    scaler = torch.amp.GradScaler("cpu")
    for batch in loader:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        print(f"loss scale {scaler.get_scale()}")
    """
    assert rows(source, "AMP021") == []


# -- AMP001 --------------------------------------------------------------------------------------


def test_amp001_autocast_factory_set_in_a_base_class() -> None:
    source = """
    import torch
    from functools import partial

    class BaseLoop:
        def __init__(self, amp):
            self.amp_autocast = partial(torch.autocast, device_type="cuda", enabled=amp)

    class FitLoop(BaseLoop):
        def one_step(self, batch):
            with self.amp_autocast():
                loss = self.model(batch)
                loss.backward()
    """
    assert rows(source, "AMP001") == [12]


def test_amp013_one_dict_saved_to_several_files_is_one_finding() -> None:
    source = """
    import torch

    def fit(model, optimizer, loader, epochs):
        scaler = torch.amp.GradScaler("cuda")
        for epoch in range(epochs):
            for batch in loader:
                scaler.scale(model(batch)).backward()
                scaler.step(optimizer)
                scaler.update()
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save(ckpt, "last.pt")
            if epoch % 10 == 0:
                torch.save(ckpt, f"epoch{epoch}.pt")
    """
    assert rows(source, "AMP013") == [11]


def test_amp013_helper_that_builds_its_own_scaler_is_not_blamed_at_its_call() -> None:
    source = """
    import torch

    def train(model, optimizer, loader):
        scaler = torch.amp.GradScaler("cuda")
        for batch in loader:
            scaler.scale(model(batch)).backward()
            scaler.step(optimizer)
            scaler.update()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "w.pt")

    def main():
        train(build_model(), build_optimizer(), build_loader())
    """
    assert rows(source, "AMP013") == [9]


def test_amp013_record_turned_into_a_dict_under_its_own_name() -> None:
    source = """
    import torch
    from dataclasses import asdict, dataclass

    @dataclass
    class Snapshot:
        weights: dict
        optim: dict

    class Runner:
        def __init__(self, model, optimizer):
            self.model, self.optimizer = model, optimizer
            self.scaler = torch.amp.GradScaler("cuda")

        def run_batch(self, batch):
            self.scaler.scale(self.model(batch)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

        def keep(self, path):
            snap = Snapshot(weights=self.model.state_dict(), optim=self.optimizer.state_dict())
            snap = asdict(snap)
            torch.save(snap, path)
    """
    assert rows(source, "AMP013") == [22]


@pytest.mark.parametrize(
    "test",
    [
        'not hasattr(self, "gs")',
        "self.gs is None",
        "self.gs is None and use_amp",
        "self.gs is None or self.step_count == 0",
    ],
)
def test_amp010_more_lazy_spellings_are_exempt(test: str) -> None:
    source = f"""
    import torch

    class Loop:
        def fit(self, loader):
            for batch in loader:
                if {test}:
                    self.gs = torch.amp.GradScaler("cuda")
                self.gs.scale(self.model(batch)).backward()
                self.gs.step(self.optimizer)
                self.gs.update()
    """
    assert rows(source, "AMP010") == []


def test_amp010_lazy_or_every_step_test_is_not_exempt() -> None:
    source = """
    import torch

    for batch in loader:
        if scaler is None or reset_each_step:
            scaler = torch.amp.GradScaler("cuda")
        scaler.scale(model(batch)).backward()
        scaler.step(optimizer)
        scaler.update()
    """
    assert rows(source, "AMP010") == [5]


def test_amp001_autocast_context_method_of_a_base_class() -> None:
    source = """
    import torch

    class Base:
        def amp_context(self):
            return torch.autocast("cuda", dtype=torch.float16)

    class Child(Base):
        def one_step(self, batch):
            with self.amp_context():
                loss = self.model(batch)
                loss.backward()
    """
    assert rows(source, "AMP001") == [11]


# -- a fix never applies where its premise is not certain ----------------------------------------

CORRECT_CODE = [
    CAST_SCALED,
    HELPER_GETS_SCALED,
    LEGACY_ALIAS_FALLBACK.replace("    return LegacyScaler()\n", "    return GradScaler()\n"),
    ANNOTATED,
]


@pytest.mark.parametrize("source", CORRECT_CODE)
def test_no_rule_rewrites_correct_code(source: str) -> None:
    from amplint.engine.registry import all_rules

    text = textwrap.dedent(source).lstrip("\n")
    codes = {rule.code for rule in all_rules()}
    assert fix_bytes(text.encode(), "case.py", codes, unsafe=True).data is None


def test_amp013_restore_from_a_record_rebuilt_from_the_checkpoint() -> None:
    source = """
    import torch
    from dataclasses import dataclass

    @dataclass
    class Snapshot:
        weights: dict
        optim: dict

    class Runner:
        def __init__(self, model, optimizer):
            self.model, self.optimizer = model, optimizer
            self.scaler = torch.amp.GradScaler("cuda")

        def run_batch(self, batch):
            self.scaler.scale(self.model(batch)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

        def resume(self, path):
            snap = open_file(path)
            with snap as handle:
                data = torch.load(handle)
            snap = Snapshot(**data)
            self.model.load_state_dict(snap.weights)
            self.optimizer.load_state_dict(snap.optim)
    """
    assert rows(source, "AMP013") == [25]


def test_amp013_in_memory_reset_from_an_attribute_is_not_a_checkpoint() -> None:
    source = """
    import torch

    class Runner:
        def __init__(self, model, optimizer):
            self.model, self.optimizer = model, optimizer
            self.scaler = torch.amp.GradScaler("cuda")
            self.initial = optimizer.state_dict()

        def run_batch(self, batch):
            self.scaler.scale(self.model(batch)).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

        def reset(self):
            self.optimizer.load_state_dict(self.initial)
    """
    assert rows(source, "AMP013") == []


DICT_TO_HELPER = """
import torch

def store(state, path):
    torch.save(state, path)

def fit(model, optimizer, loader, epochs):
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        for batch in loader:
            scaler.scale(model(batch)).backward()
            scaler.step(optimizer)
            scaler.update()
        store({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "last.pt")
"""


def test_amp013_dict_handed_to_a_saving_helper_of_the_module() -> None:
    assert rows(DICT_TO_HELPER, "AMP013") == [13]
    result = fixed(DICT_TO_HELPER, "AMP013", unsafe=False)
    assert result == textwrap.dedent(DICT_TO_HELPER).lstrip("\n").replace(
        '"optimizer": optimizer.state_dict()}',
        '"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}',
    )


def test_amp013_helper_that_reshapes_the_dict_is_not_assumed_to_save_it() -> None:
    source = DICT_TO_HELPER.replace(
        "    torch.save(state, path)",
        "    state = {k: v for k, v in state.items() if k != 'model'}\n    torch.save(state, path)",
    )
    assert rows(source, "AMP013") == []


def test_amp007_legacy_import_in_the_try_body_runs_on_a_current_torch() -> None:
    source = """
    import torch
    try:
        from torch.cuda.amp import autocast
    except ImportError:
        from torch.amp import autocast

    with autocast():
        pass
    """
    # The try body succeeds on every torch that still ships the alias: its use warns.
    # Rewriting it would change what an old torch runs, so there is no fix.
    assert rows(source, "AMP007") == [7]
    assert fixed(source, "AMP007") is None


def test_amp007_legacy_call_in_a_compatibility_try_is_reported_without_a_fix() -> None:
    source = """
    import torch
    try:
        dtype = torch.get_autocast_gpu_dtype()
    except AttributeError:
        dtype = torch.get_autocast_dtype("cuda")
    """
    assert rows(source, "AMP007") == [3]
    assert fixed(source, "AMP007") is None
