"""Analysing a large module on the part its rules can see reports exactly what the whole
module gives (see :mod:`amplint.engine.slicing`)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from amplint.api import check_source
from amplint.catalog import static_codes
from amplint.engine import slicing
from amplint.engine.prefilter import all_words, words_of
from amplint.engine.registry import all_rules
from amplint.engine.run import lint_bytes
from amplint.engine.slicing import relevant_slice

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"
CODES = sorted(static_codes())


@pytest.fixture
def slice_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slice files of any size, however much of them is kept: every example becomes a case."""
    monkeypatch.setattr(slicing, "SLICE_ABOVE", 0)
    monkeypatch.setattr(slicing, "MAX_KEPT_SHARE", 1.0)


def _keys(data: bytes, *, sliced: bool) -> tuple[bool, list[tuple[object, ...]]]:
    result = lint_bytes(data, "case.py", CODES, fixes=False, sliced=sliced)
    keys = sorted((f.code, f.location, f.end_location, f.message) for f in result.findings)
    return result.sliced, keys


def _slice(source: str, codes: list[str]) -> str | None:
    data = source.encode()
    part = relevant_slice(data, ast.parse(data), all_words(), [g for _, g in words_of(codes)])
    return None if part is None else part.decode()


def _valid_slice(source: str, codes: list[str]) -> str:
    """The slice, which must exist and still be Python."""
    part = _slice(source, codes)
    assert part is not None
    ast.parse(part)
    return part


def _examples() -> list[object]:
    cases = []
    for rule in all_rules():
        for number, source in enumerate(rule.valid):
            cases.append(pytest.param(source, id=f"{rule.code}-valid-{number}"))
        for number, example in enumerate(rule.invalid):
            cases.append(pytest.param(example.source, id=f"{rule.code}-invalid-{number}"))
    for path in sorted(CORPUS.rglob("*.py")):
        cases.append(pytest.param(path.read_text(), id=str(path.relative_to(CORPUS))))
    return cases


@pytest.mark.parametrize("source", _examples())
def test_every_example_and_corpus_file_gives_the_same_findings_sliced(
    slice_everything: None, source: str
) -> None:
    data = textwrap.dedent(source).encode()
    _, whole = _keys(data, sliced=False)
    _, part = _keys(data, sliced=True)
    assert part == whole


def _library(units: int) -> str:
    """Unrelated library code around the AMP code, as in torch's large test modules."""
    return "".join(
        f"\n\ndef helper_{n}(x, rank=0):\n    y = x * {n}\n    return y + rank\n"
        for n in range(units)
    )


#: A step without its update (AMP002), in a large module.
UNFINISHED = (
    "import torch\n\n\n"
    "def train(model, optimizer, batches):\n"
    "    scaler = torch.amp.GradScaler('cuda')\n"
    "    for batch in batches:\n"
    "        with torch.autocast('cuda'):\n"
    "            loss = model(batch).sum()\n"
    "        scaler.scale(loss).backward()\n"
    "        scaler.step(optimizer)\n"
)

TRAINER = """\
import torch
from torch.amp import GradScaler, autocast


class Trainer:
    def __init__(self, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self.gs = GradScaler("cuda")

    def train_step(self, batch):
        with autocast("cuda"):
            loss = self.model(batch).sum()
        self.gs.scale(loss).backward()
        self.gs.step(self.optimizer)
        self.finish()

    def finish(self):
        self.gs.update()
        self.optimizer.zero_grad()
"""


def test_a_method_that_only_reads_an_amp_object_stays_with_it(slice_everything: None) -> None:
    # ``finish`` names no AMP word: it stays because it reads ``self.gs``, which a kept unit
    # assigns; without it AMP002 would see a step never followed by an update.
    source = TRAINER + _library(60)
    part = _slice(source, ["AMP002"])
    assert part is not None
    assert "self.gs.update()" in part
    assert "def helper_3" not in part
    assert len(part.splitlines()) == len(source.splitlines())
    for row, line in enumerate(part.splitlines()):
        assert line in ("", source.splitlines()[row])
    _, whole = _keys(source.encode(), sliced=False)
    sliced, found = _keys(source.encode(), sliced=True)
    assert sliced and found == whole == []


def test_a_helper_the_loop_calls_is_kept_and_its_findings_keep_their_lines(
    slice_everything: None,
) -> None:
    source = (
        _library(40)
        + textwrap.dedent(
            """

            def backward_of(loss):
                loss.backward()


            def train(model, batches, optimizer):
                for batch in batches:
                    with torch.autocast("cuda"):
                        loss = model(batch).sum()
                        backward_of(loss)
                    optimizer.step()
            """
        )
        + _library(40).replace("helper_", "more_")
    )
    source = "import torch\n" + source
    part = _slice(source, ["AMP001"])
    assert part is not None and "loss.backward()" in part and "def more_1(" not in part
    _, whole = _keys(source.encode(), sliced=False)
    sliced, found = _keys(source.encode(), sliced=True)
    assert sliced
    assert found == whole
    assert "AMP001" in [key[0] for key in found]


def test_statements_sharing_a_line_go_or_stay_together() -> None:
    source = (
        "import torch\nx = 1; y = (\n    2)\n"
        "class Quiet(Exception): pass\n"
        "class Loud:\n    a = 1; b = torch.autocast('cuda')\n    c = 3\n"
        + _library(30)
        + "\nwith torch.autocast('cuda'): pass\n"
    )
    part = _valid_slice(source, ["AMP008"])
    assert "    a = 1; b = torch.autocast('cuda')\n" in part
    assert "x = 1" not in part and "    2)" not in part and "class Quiet" not in part


def test_a_class_whose_members_all_go_keeps_a_body() -> None:
    source = (
        "import torch\n\n\nclass Config:\n    @property\n    def rank(self):\n        return 0\n"
        "\n    def other(self):\n        return 1\n"
        + _library(30)
        + "\n\ndef run():\n    cfg = Config()\n    with torch.autocast('cpu'):\n        pass\n"
    )
    part = _valid_slice(source, ["AMP008"])  # still Python: the class kept a member
    assert "class Config:" in part


def test_a_global_assigned_in_a_function_keeps_its_readers_and_star_imports_stay(
    slice_everything: None,
) -> None:
    source = (
        "from torch.amp import *\nimport torch\n\ngs = None\n\n\n"
        "def setup():\n    global gs\n    gs = GradScaler('cuda')\n\n\n"
        "def finish():\n    gs.update()\n\n\ncallbacks = [finish]\n"
        # so many other updates that `update` is no rare word here: `finish` stays only
        # because it reads the scaler `setup` assigns
        + "".join(f"\n\ndef merge_{n}(x, y):\n    x.update(y)\n" for n in range(100))
        + "\n\ndef train(model, optimizer, batches):\n    setup()\n"
        "    for batch in batches:\n        with torch.autocast('cuda'):\n"
        "            loss = model(batch).sum()\n        gs.scale(loss).backward()\n"
        "        gs.step(optimizer)\n"
    )
    part = _valid_slice(source, ["AMP002"])
    assert "from torch.amp import *" in part and "    gs.update()" in part
    _, whole = _keys(source.encode(), sliced=False)
    sliced, found = _keys(source.encode(), sliced=True)
    assert sliced and found == whole


def test_a_word_a_few_percent_of_a_large_module_say_is_no_seed(slice_everything: None) -> None:
    # torch's distributed_test.py: 538 units, of which 12-24 say `step`, `zero_grad`, `grad`
    # or `dtype` in tests that have nothing to do with AMP. Units holding a word that 3% of
    # the module says are not kept for it; a word that only a handful say still marks them.
    def zeroing(count: int) -> str:
        return "".join(
            f"\n\ndef zeroing_{n}(opt):\n    opt.zero_grad()\n    return {n}\n"
            for n in range(count)
        )

    common = TRAINER + _library(300) + zeroing(10)
    part = _slice(common, ["AMP002"])
    assert part is not None and "self.gs.update()" in part
    assert "def zeroing_" not in part
    _, whole = _keys(common.encode(), sliced=False)
    sliced, found = _keys(common.encode(), sliced=True)
    assert sliced and found == whole
    rare = _slice(TRAINER + _library(300) + zeroing(3), ["AMP002"])
    assert rare is not None and rare.count("def zeroing_") == 3


def test_self_attributes_of_an_unrelated_class_do_not_join_the_slice(
    slice_everything: None,
) -> None:
    # dynamo's builder.py: every tracker class has its own `self.value` and `call_function`.
    # The trainer reads `self.optimizer` and calls `self.finish()`; another class's members
    # of those names are not its business. A subclass's method that reads the scaler is; one
    # that only rebinds a plain attribute is not (the analysis looks for what `self.x` is in
    # the reader's class and its bases).
    unrelated = (
        "\n\nclass Cache:\n    def __init__(self):\n        self.optimizer = None\n"
        "\n    def finish(self):\n        return self.optimizer\n"
    )
    derived = (
        "\n\nclass FastTrainer(Trainer):\n    def reset(self):\n        self.optimizer = None\n"
        "\n    def flush(self):\n        self.gs.update()\n"
    )
    source = TRAINER + _library(60) + unrelated + derived
    part = _slice(source, ["AMP002"])
    assert part is not None
    assert "class Cache" not in part and "return self.optimizer" not in part
    assert "class FastTrainer(Trainer):" in part and "def flush(self):" in part
    assert "def reset(self):" not in part
    _, whole = _keys(source.encode(), sliced=False)
    sliced, found = _keys(source.encode(), sliced=True)
    assert sliced and found == whole


#: Operators that register themselves and share a dispatching base, as dynamo's
#: higher_order_ops.py: one of them enters autocast and steps an optimizer inside it.
OPERATORS = """\
import torch

REGISTRY = {}


def register(cls):
    REGISTRY[cls.__name__] = cls.call_function


class Operator:
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register(cls)

    def call_function(self, args):
        return self._call_function(args)


class Autocasting(Operator):
    def _call_function(self, args):
        with torch.autocast("cuda"):
            loss = args.model(args.batch).sum()
            args.optimizer.step()
        return loss


class Scanning(Operator):
    def _call_function(self, args):
        return self.scan(args)

    def scan(self, args):
        return [x * 2 for x in args.xs]
"""


def test_a_base_class_keeps_neither_its_registration_hook_nor_its_other_subclasses(
    slice_everything: None,
) -> None:
    # Kept, the base's `__init_subclass__` would keep `register`, which reads
    # `cls.call_function`, and the base's `call_function` reads `self._call_function`:
    # every operator of the module would join. Python calls the hook when a class is made,
    # never on the way into a step, and a sibling's `_call_function` is not the base's.
    source = OPERATORS + _library(60)
    part = _slice(source, ["AMP012"])
    assert part is not None
    assert "args.optimizer.step()" in part
    assert "def __init_subclass__" not in part and "def register" not in part
    assert "class Scanning" not in part and "def scan" not in part
    _, whole = _keys(source.encode(), sliced=False)
    sliced, found = _keys(source.encode(), sliced=True)
    assert sliced and found == whole
    assert [key[0] for key in found] == ["AMP012"]


def test_a_word_that_only_a_project_module_supplies_means_no_slice() -> None:
    source = "import torch\n" + _library(30)
    assert _slice(source, ["AMP002"]) is None


def test_check_without_edits_slices_and_with_edits_does_not(tmp_path: Path) -> None:
    source = UNFINISHED + _library(800)
    data = source.encode()
    assert len(data) > slicing.SLICE_ABOVE
    assert lint_bytes(data, "t.py", CODES, fixes=False, sliced=True).sliced
    plain = check_source(data, "t.py", CODES, with_edits=False)
    edited = check_source(data, "t.py", CODES, with_edits=True)
    assert [(f.code, f.location) for f in plain] == [(f.code, f.location) for f in edited]
    assert [f.code for f in plain] == ["AMP002"]
    assert plain[0].fix is not None and edited[0].fix is not None and edited[0].fix.edits


def test_a_sliced_result_refuses_to_make_edits() -> None:
    source = UNFINISHED + _library(800)
    result = lint_bytes(source.encode(), "t.py", CODES, fixes=False, sliced=True)
    assert result.sliced and result.findings
    with pytest.raises(ValueError, match="sliced"):
        result.fix_of(result.findings[0])


def test_pieces_checked_only_where_they_have_findings_and_redone_when_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from amplint.engine import piecewise

    # A module large enough to be parsed in pieces, with its finding in the last statement.
    source = "import torch\n" + _library(2500) + "\n\n" + UNFINISHED.replace("import torch\n", "")
    data = source.encode()
    assert len(data) > piecewise.PIECEWISE_ABOVE
    expected = [(f.code, f.location) for f in lint_bytes(data, "t.py", CODES).findings]
    assert [code for code, _ in expected] == ["AMP002"]

    real = piecewise._assemble

    def misassembled(*args: object, **kwargs: object) -> object:
        module = real(*args, **kwargs)  # type: ignore[arg-type]
        # A seam gone wrong: one statement in the middle lost.
        body = list(module.body)
        del body[len(body) // 2]
        return module.with_changes(body=tuple(body))

    monkeypatch.setattr(piecewise, "_assemble", misassembled)
    result = lint_bytes(data, "t.py", CODES, fixes=False, sliced=True)
    assert result.parsed is not None and result.parsed.verified  # redone from a whole parse
    assert [(f.code, f.location) for f in result.findings] == expected
    # Without findings nothing is generated to check: the unchecked tree is kept.
    from amplint.engine.source import parse

    assert not parse(data, verify=False).verified
    assert parse(data).verified


#: A CUDA GradScaler beside autocast on the CPU: AMP017 unless the file uses CUDA elsewhere.
CPU_AUTOCAST_CUDA_SCALER = (
    "import torch\n\n\n"
    "def train(model, optimizer, batches):\n"
    "    scaler = torch.amp.GradScaler('cuda')\n"
    "    for batch in batches:\n"
    "        with torch.autocast('cpu', dtype=torch.float16):\n"
    "            loss = model(batch).sum()\n"
    "        scaler.scale(loss).backward()\n"
    "        scaler.step(optimizer)\n"
    "        scaler.update()\n"
)


def _device_helpers(units: int, every: int) -> str:
    """Library code of which every ``every``-th function moves its tensor to CUDA."""
    return "".join(
        f"\n\ndef helper_{n}(x, rank=0):\n    y = x{'.cuda()' if n % every == 0 else ''} * {n}\n"
        "    return y + rank\n"
        for n in range(units)
    )


def test_a_finding_that_rests_on_what_the_module_never_says_is_decided_on_the_whole(
    slice_everything: None,
) -> None:
    # AMP017's CUDA GradScaler finding holds only if nothing in the file uses CUDA. The
    # helpers that do are too many to be seeds and unrelated to the loop: the slice leaves
    # them out, and on the slice alone the finding would be a false alarm.
    source = CPU_AUTOCAST_CUDA_SCALER + _device_helpers(200, every=20)
    part = _slice(source, ["AMP017"])
    assert part is not None and "def train" in part and ".cuda()" not in part
    _, whole = _keys(source.encode(), sliced=False)
    assert whole == []
    sliced, found = _keys(source.encode(), sliced=True)
    assert found == [] and not sliced  # decided on the whole module, so it may make edits
    # Without any sign of CUDA the finding stands, made on the slice.
    source = CPU_AUTOCAST_CUDA_SCALER + _library(200)
    _, whole = _keys(source.encode(), sliced=False)
    assert [key[0] for key in whole] == ["AMP017"]
    assert _keys(source.encode(), sliced=True)[1] == whole


def test_readers_of_what_a_seed_assigns_join_only_for_amp_values(slice_everything: None) -> None:
    # `__init__` says GradScaler, so it is a seed; the methods that read `self.gs` join it,
    # the sixty that read only its `self.name` do not.
    methods = "".join(
        f"\n    def describe_{n}(self):\n        return self.name + '{n}'\n" for n in range(60)
    )
    source = (
        TRAINER.replace(
            '        self.gs = GradScaler("cuda")\n',
            "        self.gs = GradScaler(\"cuda\")\n        self.name = 'trainer'\n",
        )
        + methods
    )
    assert "self.name = 'trainer'" in source
    part = _slice(source, ["AMP002"])
    assert part is not None
    assert "self.gs.update()" in part and "def describe_" not in part
    _, whole = _keys(source.encode(), sliced=False)
    sliced, found = _keys(source.encode(), sliced=True)
    assert sliced and found == whole


def _common_training_words(units: int) -> str:
    """Helpers that step, update and run backward passes: in such a module those words are
    common, so the units saying them are no seeds."""
    return "".join(
        f"\n\ndef tick_{n}(sched, stats, t):\n    sched.step()\n    stats.update(t)\n"
        "    t.backward()\n"
        for n in range(units)
    )


#: AMP objects handed on from the statement that makes them, by statements, seeds or calls.
HANDED_ON = {
    "an autocast region kept on self": (
        "import torch\n\n\nclass Runner:\n"
        "    def __init__(self, model, optimizer):\n"
        "        self.model = model\n        self.optimizer = optimizer\n"
        "        ctx = torch.autocast('cuda', dtype=torch.float16)\n"
        "        self.ctx = ctx\n\n"
        "    def run(self, batch):\n        with self.ctx:\n"
        "            loss = self.model(batch).sum()\n            loss.backward()\n"
        "            self.optimizer.step()\n",
        ["AMP001", "AMP003"],
    ),
    "a scaler kept on self, updated in another method": (
        "import torch\n\n\nclass Trainer:\n"
        "    def __init__(self, model, optimizer):\n"
        "        self.model = model\n        self.optimizer = optimizer\n"
        "        gs = torch.amp.GradScaler('cuda')\n        self.gs = gs\n\n"
        "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
        "            loss = self.model(batch).sum()\n"
        "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n"
        "    def on_step_end(self):\n        self.gs.update()\n",
        [],
    ),
    "a module alias of a scaler": (
        "import torch\n\nif torch.cuda.is_available():\n"
        "    _gs = torch.amp.GradScaler('cuda')\n    GS = _gs\n\n\n"
        "def finish():\n    GS.update()\n\n\n"
        "def train(model, optimizer, batches):\n    for b in batches:\n"
        "        with torch.autocast('cuda'):\n            loss = model(b).sum()\n"
        "        GS.scale(loss).backward()\n        GS.step(optimizer)\n",
        [],
    ),
    # One seed hands its scaler to another (both say an AMP word).
    "a scaler one seed hands to another": (
        (
            "import torch\n\n_GX = torch.amp.GradScaler('cuda')\n\n\nclass Trainer:\n"
            "    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self.ctx = torch.autocast('cuda')\n        self.gs = _GX\n\n"
            "    def train_step(self, batch):\n        with self.ctx:\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n"
            "    def on_step_end(self):\n        self.gs.update()\n"
        ),
        [],
    ),
    # A module function makes the scaler; a method binds its result.
    "a scaler from a module factory": (
        (
            "import torch\n\n\ndef make_gx():\n    return torch.amp.GradScaler('cuda')\n\n\n"
            "class Trainer:\n    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self.gs = make_gx()\n\n"
            "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n"
            "    def on_step_end(self):\n        self.gs.update()\n"
        ),
        [],
    ),
    # AMP010: the helper makes a GradScaler each time it runs, and a loop calls it once per
    # batch; the loop reads nothing the helper assigns: it joins as the helper's caller.
    "a helper making a scaler, called by a loop": (
        (
            "from torch.amp import GradScaler\n\n\n"
            "def run_batch(model, optimizer, batch):\n    scaler = GradScaler('cuda')\n"
            "    loss = model(batch)\n    scaler.scale(loss).backward()\n"
            "    scaler.step(optimizer)\n    scaler.update()\n\n\n"
            "for batch in loader:\n    run_batch(model, optimizer, batch)\n"
        ),
        ["AMP010"],
    ),
    "an alias of an alias of autocast": (
        (
            "import torch\n\n_AC = torch.autocast\nctx_cls = _AC\n\n\n"
            "class Runner:\n    def run(self, model, batch, optimizer):\n"
            "        with ctx_cls('cuda'):\n            loss = model(batch).sum()\n"
            "            loss.backward()\n            optimizer.step()\n"
        ),
        ["AMP001", "AMP003"],
    ),
    # The factory is two calls deep: `_make` returns what `_build` makes.
    "a scaler from a factory two calls deep": (
        (
            "import torch\n\n\nclass Trainer:\n"
            "    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self.gs = self._make()\n\n"
            "    def _make(self):\n        return self._build()\n\n"
            "    def _build(self):\n        return torch.amp.GradScaler('cuda')\n\n"
            "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n"
            "    def on_step_end(self):\n        self.gs.update()\n"
        ),
        [],
    ),
    # AMP010 with a method: the loop that calls it once per batch joins; callers that
    # call it once do not need to.
    "a method making a scaler, called by a loop": (
        (
            "from torch.amp import GradScaler\n\n\nclass Trainer:\n"
            "    def _one_batch(self, batch):\n        scaler = GradScaler('cuda')\n"
            "        loss = self.model(batch)\n        scaler.scale(loss).backward()\n"
            "        scaler.step(self.optimizer)\n        scaler.update()\n\n"
            "    def fit(self, loader):\n        for batch in loader:\n"
            "            self._one_batch(batch)\n"
        ),
        ["AMP010"],
    ),
    # The region comes from a method: a context manager that yields inside autocast, or a
    # method that returns one. `with self.mixed():` says no AMP word.
    "a region from a context-manager method": (
        (
            "import contextlib\nimport torch\n\n\nclass Trainer:\n"
            "    @contextlib.contextmanager\n    def mixed(self):\n"
            "        with torch.autocast('cuda'):\n            yield\n\n"
            "    def train_step(self, batch):\n        with self.mixed():\n"
            "            loss = self.model(batch).sum()\n            loss.backward()\n"
        ),
        ["AMP001"],
    ),
    "a region returned by a method": (
        (
            "import torch\n\n\nclass Trainer:\n"
            "    def mixed(self):\n        return torch.autocast('cuda')\n\n"
            "    def train_step(self, batch):\n        with self.mixed():\n"
            "            loss = self.model(batch).sum()\n            loss.backward()\n"
        ),
        ["AMP001"],
    ),
    # A property hands out what `__init__` stored; the readers of the property join.
    "a scaler behind a property": (
        (
            "import torch\n\n\nclass Trainer:\n"
            "    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self._gs = torch.amp.GradScaler('cuda')\n\n"
            "    @property\n    def gs(self):\n        return self._gs\n\n"
            "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n"
            "    def on_step_end(self):\n        self.gs.update()\n"
        ),
        [],
    ),
    # A context manager that yields a value inside its region.
    "a region a context manager yields in": (
        (
            "import contextlib\nimport torch\n\n\nclass Trainer:\n"
            "    @contextlib.contextmanager\n    def mixed(self):\n"
            "        with torch.autocast('cuda'):\n            yield self\n\n"
            "    def train_step(self, batch):\n        with self.mixed():\n"
            "            loss = self.model(batch).sum()\n            loss.backward()\n"
        ),
        ["AMP001"],
    ),
    # The method makes its scaler under a condition, anew for each batch.
    "a method making a scaler under a condition, called by a loop": (
        (
            "from torch.amp import GradScaler\n\n\nclass Trainer:\n"
            "    def _one_batch(self, batch):\n"
            "        scaler = GradScaler('cuda') if self.amp else None\n"
            "        loss = self.model(batch)\n        scaler.scale(loss).backward()\n"
            "        scaler.step(self.optimizer)\n        scaler.update()\n\n"
            "    def fit(self, loader):\n        for batch in loader:\n"
            "            self._one_batch(batch)\n"
        ),
        ["AMP010"],
    ),
    # The region a method returns is first bound to a local.
    "a region a method binds, then returns": (
        (
            "import torch\n\n\nclass Trainer:\n"
            "    def mixed(self):\n        ctx = torch.autocast('cuda')\n        return ctx\n\n"
            "    def train_step(self, batch):\n        with self.mixed():\n"
            "            loss = self.model(batch).sum()\n            loss.backward()\n"
        ),
        ["AMP001"],
    ),
    # A base class's method updates the scaler a subclass makes; a driver outside calls it.
    "a scaler updated by a base-class method": (
        (
            "import torch\n\n\nclass Base:\n    def describe(self):\n        return 1\n\n"
            "    def finish(self):\n        self.gs.update()\n\n\n"
            "class Trainer(Base):\n    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self.gs = torch.amp.GradScaler('cuda')\n\n"
            "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n\n"
            "def fit(trainer, data):\n    for b in data:\n        trainer.train_step(b)\n"
            "        trainer.finish()\n"
        ),
        [],
    ),
    # Another class reaches the trainer's scaler through the trainer.
    "a scaler updated through another object": (
        (
            "import torch\n\n\nclass Trainer:\n    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self.gs = torch.amp.GradScaler('cuda')\n\n"
            "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n\n"
            "class Callback:\n    def describe(self):\n        return 1\n\n"
            "    def on_step_end(self, trainer):\n        trainer.gs.update()\n"
        ),
        [],
    ),
    # Getters returning getters: the object is followed further than other values.
    "a region behind a chain of getters": (
        (
            "import torch\n\n\nclass Trainer:\n    def __init__(self, model):\n"
            "        self.model = model\n        self._ctx = torch.autocast('cuda')\n\n"
            "    def a(self):\n        return self._ctx\n\n"
            "    def b(self):\n        return self.a()\n\n"
            "    def c(self):\n        return self.b()\n\n"
            "    def train_step(self, batch):\n        with self.c():\n"
            "            loss = self.model(batch).sum()\n            loss.backward()\n"
        ),
        ["AMP001"],
    ),
    # Handed on twice at module level.
    "a scaler aliased twice": (
        (
            "import torch\n\n_gs = torch.amp.GradScaler('cuda')\nGS = _gs\nGX = GS\n\n\n"
            "def finish():\n    GX.update()\n\n\n"
            "def train(model, optimizer, batches):\n    for b in batches:\n"
            "        with torch.autocast('cuda'):\n            loss = model(b).sum()\n"
            "        GX.scale(loss).backward()\n        GX.step(optimizer)\n"
        ),
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(HANDED_ON))
def test_an_amp_object_handed_on_keeps_its_readers(name: str) -> None:
    # The statement that makes the object is the seed's AMP word; the one that stores it
    # (`self.gs = gs`) says none, and the units that read it must still join the slice.
    core, codes = HANDED_ON[name]
    source = core + _common_training_words(160) + _library(400)
    data = source.encode()
    assert len(data) > slicing.SLICE_ABOVE
    _, whole = _keys(data, sliced=False)
    sliced, part = _keys(data, sliced=True)
    assert sliced and part == whole
    assert sorted(key[0] for key in whole) == codes


def test_a_seed_whose_amp_word_is_a_keyword_literal_keeps_its_readers() -> None:
    # `Accelerator(mixed_precision="fp16")` says its AMP word as a keyword literal; the
    # `prepare` that hands it the half-precision model must stay (AMP022).
    halves = "".join(f"\n\ndef to_half_{n}(t):\n    return t.half()\n" for n in range(30))
    source = (
        "import torch\nfrom accelerate import Accelerator\nmodel = Net().half()\n"
        "acc = Accelerator(mixed_precision='fp16')\n"
        "model, optimizer = acc.prepare(model, optimizer)\n" + halves + _library(500)
    )
    _, whole = _keys(source.encode(), sliced=False)
    sliced, part = _keys(source.encode(), sliced=True)
    assert sliced and part == whole
    assert [key[0] for key in whole] == ["AMP022"]


@pytest.mark.parametrize(
    ("script", "codes"),
    [
        # The `.half()` of the model is a statement of its own; it binds nothing.
        (
            "import torch\nfrom accelerate import Accelerator as Acc\nmodel = Net()\n"
            "model.half()\nacc = Acc(mixed_precision='fp16')\n"
            "model, optimizer, loader = acc.prepare(model, optimizer, loader)\n",
            ["AMP022"],
        ),
        # The loop freezing part of the model decides that the float16 model is fine.
        (
            "import torch\nimport lightning as L\nmodel = Net().half()\n"
            "for p in model.encoder.parameters():\n    p.requires_grad = False\n"
            "L.Trainer(precision='16-mixed').fit(model)\n",
            [],
        ),
    ],
)
def test_the_statements_of_a_script_that_work_on_its_model_stay(
    script: str, codes: list[str]
) -> None:
    halves = "".join(f"\n\ndef to_half_{n}(t):\n    return t.half()\n" for n in range(30))
    source = script + halves + _library(500)
    _, whole = _keys(source.encode(), sliced=False)
    sliced, part = _keys(source.encode(), sliced=True)
    assert sliced and part == whole
    assert [key[0] for key in whole] == codes


def test_a_scaler_made_by_a_factory_method_keeps_its_update() -> None:
    # `self.gs = self._build()` names no AMP word; the factory does. The method that
    # binds its result is looked at with the seeds, and `self.gs`'s readers join: without
    # them AMP002 would see a step never followed by an update.
    source = (
        (
            "import torch\n\n\nclass Trainer:\n"
            "    def __init__(self, model, optimizer):\n"
            "        self.model = model\n        self.optimizer = optimizer\n"
            "        self.gs = self._build()\n\n"
            "    def _build(self):\n        return torch.amp.GradScaler('cuda')\n\n"
            "    def train_step(self, batch):\n        with torch.autocast('cuda'):\n"
            "            loss = self.model(batch).sum()\n"
            "        self.gs.scale(loss).backward()\n        self.gs.step(self.optimizer)\n\n"
            "    def on_step_end(self):\n        self.gs.update()\n"
        )
        + _common_training_words(100)
        + _library(400)
    )
    _, whole = _keys(source.encode(), sliced=False)
    sliced, part = _keys(source.encode(), sliced=True)
    assert sliced and part == whole == []
