"""Projects: ``amplint check`` over several modules follows the imports between them.

Each test writes a small multi-module training project to a temporary folder and runs the
command line on it (click's runner, and a real subprocess where the wire matters), as a
user would. The same file checked on its own must keep today's findings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from amplint.api import check_source
from amplint.catalog import default_codes
from amplint.cli import main

AMPLINT = [sys.executable, "-m", "amplint"]

HELPER = """\
import torch


def init_opt(model, lr):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cuda")
    return optimizer, scaler
"""

# `gs` says nothing about being a scaler: only helper.py shows that it is one.
TRAIN_NO_UPDATE = """\
import torch
from helper import init_opt

model = torch.nn.Linear(4, 4)
optimizer, gs = init_opt(model, 0.1)
for x in loader:
    with torch.autocast("cuda"):
        loss = model(x).sum()
    gs.scale(loss).backward()
    gs.step(optimizer)
    optimizer.zero_grad()
"""

TRAIN_NO_UPDATE_FIXED = TRAIN_NO_UPDATE.replace(
    "    gs.step(optimizer)\n", "    gs.step(optimizer)\n    gs.update()\n"
)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def check(
    root: Path, monkeypatch: pytest.MonkeyPatch, *args: str, cache: bool = False
) -> list[dict]:
    monkeypatch.chdir(root)
    options = [] if cache else ["--no-cache"]
    result = CliRunner().invoke(
        main, ["check", *options, "--output-format", "json", *args], catch_exceptions=False
    )
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def found(findings: list[dict]) -> set[tuple[str, str, int]]:
    return {(f["code"], Path(f["filename"]).as_posix(), f["location"]["row"]) for f in findings}


def alone(path: Path) -> set[tuple[str, int]]:
    """What the file gives checked on its own (the engine, no project)."""
    findings = check_source(path.read_bytes(), path.name, frozenset(default_codes()))
    return {(f.code, f.location.row) for f in findings}


# ---------------------------------------------------------------------- each rule


def test_scaler_returned_by_a_helper_is_a_scaler_for_amp002(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"helper.py": HELPER, "train.py": TRAIN_NO_UPDATE})
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP002", "train.py", 10)}
    # Several files named on the command line are a project too.
    assert found(check(tmp_path, monkeypatch, "train.py", "helper.py")) == {
        ("AMP002", "train.py", 10)
    }
    # On its own, train.py cannot know what `gs` is: quiet, as before.
    assert check(tmp_path, monkeypatch, "train.py") == []
    assert alone(tmp_path / "train.py") == set()


def test_a_disabled_scaler_from_the_helper_is_not_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = HELPER.replace('GradScaler("cuda")', 'GradScaler("cuda", enabled=False)')
    write(tmp_path, {"helper.py": helper, "train.py": TRAIN_NO_UPDATE})
    assert check(tmp_path, monkeypatch, ".") == []


def test_starred_unpacking_is_not_read_by_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `*rest` takes a list of what is left: `rest` is no GradScaler even where position 1 is.
    train = TRAIN_NO_UPDATE.replace("optimizer, gs = init_opt", "optimizer, *gs = init_opt")
    write(tmp_path, {"helper.py": HELPER, "train.py": train})
    assert check(tmp_path, monkeypatch, ".") == []


def test_module_level_scaler_of_another_module_may_be_updated_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `amp.finish()` may update the shared scaler: no AMP002 on train.py's step.
    write(
        tmp_path,
        {
            "amp.py": """\
                import torch
                scaler = torch.amp.GradScaler()

                def finish():
                    scaler.update()
                """,
            "train.py": """\
                import amp
                from amp import scaler

                for x in loader:
                    scaler.scale(model(x)).backward()
                    scaler.step(optimizer)
                    amp.finish()
                """,
        },
    )
    assert check(tmp_path, monkeypatch, ".") == []


def test_clip_before_unscale_with_an_imported_scaler_amp006(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from helper import init_opt

        def train(model, loader):
            opt, gs = init_opt(model, 0.1)
            for x in loader:
                gs.scale(model(x).sum()).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                gs.step(opt)
                gs.update()
        """
    write(tmp_path, {"helper.py": HELPER, "train.py": train})
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP006", "train.py", 8)}
    assert alone(tmp_path / "train.py") == set()


def test_a_helper_that_builds_no_gradscaler_stays_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `build_scaler()` returns the project's own wrapper, which is no GradScaler: the clip
    # is its business. Alone, the name `scaler` makes train.py look like a GradScaler loop.
    write(
        tmp_path,
        {
            "utils.py": """\
                class LossScaler:
                    def scale(self, loss):
                        return loss * 1024

                    def step(self, optimizer):
                        optimizer.step()

                def build_scaler():
                    return LossScaler()
                """,
            "train.py": """\
                import torch
                from utils import build_scaler

                def train(model, optimizer, loader):
                    scaler = build_scaler()
                    for x in loader:
                        scaler.scale(model(x).sum()).backward()
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        scaler.step(optimizer)
                """,
        },
    )
    assert check(tmp_path, monkeypatch, ".") == []
    assert ("AMP006", 8) in alone(tmp_path / "train.py")


SAVE_HELPERS = """\
import torch


def save_checkpoint(model, optimizer, epoch, path):
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
        path,
    )


def save_everything(model, optimizer, scaler, path):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    state["scaler"] = scaler.state_dict()
    torch.save(state, path)


def load_checkpoint(path, model, optimizer):
    checkpoint = torch.load(path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
"""


def test_checkpoint_helper_that_drops_the_scaler_amp013(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from utils import load_checkpoint, save_checkpoint

        scaler = torch.amp.GradScaler()
        load_checkpoint("last.pt", model, optimizer)
        for epoch in range(10):
            for x in loader:
                scaler.scale(model(x)).backward()
                scaler.step(optimizer)
                scaler.update()
            save_checkpoint(model, optimizer, epoch, "last.pt")
        """
    write(tmp_path, {"utils.py": SAVE_HELPERS, "train.py": train})
    findings = check(tmp_path, monkeypatch, ".")
    assert found(findings) == {("AMP013", "train.py", 5), ("AMP013", "train.py", 11)}
    messages = " ".join(f["message"] for f in findings)
    assert "`save_checkpoint` (utils.py:5)" in messages
    assert "`load_checkpoint` (utils.py:20)" in messages
    assert alone(tmp_path / "train.py") == set()


def test_checkpoint_helper_behind_a_saving_helper_amp013(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper hands its dict to a second helper that writes a temporary file first."""
    utils = """\
        import shutil
        import torch

        def write_atomically(state, path):
            torch.save(state, path + ".tmp")
            shutil.move(path + ".tmp", path)

        def save_checkpoint(model, optimizer, step, path):
            write_atomically(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                path,
            )

        def save_all(model, optimizer, scaler, path):
            state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
            write_atomically(state, path)
        """
    train = """\
        import torch
        import utils

        scaler = torch.amp.GradScaler()
        for step, x in enumerate(loader):
            scaler.scale(model(x)).backward()
            scaler.step(optimizer)
            scaler.update()
            utils.save_checkpoint(model, optimizer, step, "last.pt")
        """
    write(tmp_path, {"utils.py": utils, "train.py": train})
    findings = check(tmp_path, monkeypatch, ".")
    assert found(findings) == {("AMP013", "train.py", 9)}
    assert "`save_checkpoint` (utils.py:9)" in findings[0]["message"]
    write(
        tmp_path,
        {
            "train.py": train.replace(
                "save_checkpoint(model, optimizer, step,", "save_all(model, optimizer, scaler,"
            )
        },
    )
    assert check(tmp_path, monkeypatch, ".") == []


def test_checkpoint_helper_that_saves_the_scaler_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from utils import save_everything

        scaler = torch.amp.GradScaler()
        for x in loader:
            scaler.scale(model(x)).backward()
            scaler.step(optimizer)
            scaler.update()
        save_everything(model, optimizer, scaler, "last.pt")
        """
    write(tmp_path, {"utils.py": SAVE_HELPERS, "train.py": train})
    assert check(tmp_path, monkeypatch, ".") == []


def test_scaler_saved_by_another_helper_call_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from utils import save_checkpoint

        scaler = torch.amp.GradScaler()
        for epoch in range(10):
            for x in loader:
                scaler.scale(model(x)).backward()
                scaler.step(optimizer)
                scaler.update()
            save_checkpoint(model, optimizer, epoch, "last.pt")
            save_amp_state(scaler, "amp.pt")
        """
    write(tmp_path, {"utils.py": SAVE_HELPERS, "train.py": train})
    assert check(tmp_path, monkeypatch, ".") == []


def test_bfloat16_dtype_from_a_config_module_amp014(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from config import AMP_DTYPE

        scaler = torch.amp.GradScaler("cuda")
        for x in loader:
            with torch.autocast("cuda", dtype=AMP_DTYPE):
                loss = model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        """
    config = "import torch\n\nAMP_DTYPE = torch.bfloat16\n"
    write(tmp_path, {"config.py": config, "train.py": train})
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP014", "train.py", 4)}
    assert alone(tmp_path / "train.py") == set()
    # float16 in the config: the scaler is needed.
    (tmp_path / "config.py").write_text(config.replace("bfloat16", "float16"))
    assert check(tmp_path, monkeypatch, ".") == []


def test_backward_inside_an_autocast_region_made_by_another_module_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's file never says `autocast`: its region comes from a helper module. The
    prefilter must still let it through (it once dropped such files before any analysis)."""
    write(
        tmp_path,
        {
            "amp_utils.py": """\
                import torch

                def mixed_precision():
                    return torch.autocast("cuda", dtype=torch.float16)
                """,
            "train.py": """\
                import torch
                from amp_utils import mixed_precision

                def train(model, optimizer, loader):
                    for x, y in loader:
                        with mixed_precision():
                            loss = torch.nn.functional.mse_loss(model(x), y)
                            loss.backward()
                        optimizer.step()
                """,
        },
    )
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 8)}
    assert alone(tmp_path / "train.py") == set()


HELPER_FORWARDING_KEYWORDS = """\
    import contextlib
    import torch

    @contextlib.contextmanager
    def amp_region(device_type="cuda", **kwargs):
        with torch.amp.autocast(device_type=device_type, **kwargs):
            yield
    """


def test_a_region_helper_given_enabled_false_is_off_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """icefall's shape: a helper forwards its keywords to autocast, and a custom backward
    leaves mixed precision with `helper(enabled=False)` before its own backward pass."""
    train = """\
        import torch
        from amp_utils import amp_region

        def penalty(x):
            with torch.enable_grad():
                with amp_region(enabled=False):
                    metric = (x.float() ** 2).sum()
                    metric.backward()
            return x.grad

        def step(model, x):
            with amp_region():
                loss = model(x).sum()
                loss.backward()
        """
    write(tmp_path, {"amp_utils.py": HELPER_FORWARDING_KEYWORDS, "train.py": train})
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 14)}


def test_an_imported_helper_off_by_its_parameter_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`def maybe_amp(enabled=False)` in a helper module: off when called without arguments
    or with `False`, on with `True` (only that backward is reported)."""
    write(
        tmp_path,
        {
            "amp_utils.py": """\
                import torch

                def maybe_amp(enabled=False):
                    return torch.autocast("cuda", enabled=enabled)
                """,
            "train.py": """\
                from amp_utils import maybe_amp

                def step(model, x):
                    with maybe_amp():
                        model(x).sum().backward()
                    with maybe_amp(False):
                        model(x).sum().backward()
                    with maybe_amp(True):
                        model(x).sum().backward()
                """,
        },
    )
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 9)}


def test_a_helper_running_autograd_grad_runs_the_backward_pass_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path,
        {
            "helper.py": """\
                import torch

                def forward_and_grads(model, x, scaler):
                    loss = scaler.scale(model(x))
                    return torch.autograd.grad(loss, list(model.parameters()))
                """,
            "train.py": """\
                import torch
                from helper import forward_and_grads

                def train(model, optimizer, loader, scaler):
                    for x in loader:
                        with torch.autocast("cuda"):
                            out = forward_and_grads(model, x, scaler)
                        scaler.step(optimizer)
                        scaler.update()
                """,
        },
    )
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 7)}


HELPER_TURNING_AUTOCAST_OFF = """\
    import torch

    def backward_in_float32(loss, scaler):
        with torch.autocast("cuda", enabled=False):
            scaler.scale(loss.float()).backward()
    """


def test_a_helper_that_turns_autocast_off_for_its_backward_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Called inside autocast, the helper's backward runs with autocast off: no finding,
    whether the helper is in the same module or another one. A helper whose backward is
    outside its own region is still reported."""
    loop = """\
        import torch
        {helper}

        def train(model, optimizer, loader, scaler):
            for x, y in loader:
                with torch.autocast("cuda"):
                    loss = torch.nn.functional.mse_loss(model(x), y)
                    backward_in_float32(loss, scaler)
                scaler.step(optimizer)
                scaler.update()
        """
    helper = textwrap.dedent(HELPER_TURNING_AUTOCAST_OFF)
    write(
        tmp_path,
        {
            "steps.py": helper,
            "train.py": loop.format(helper="from steps import backward_in_float32"),
        },
    )
    assert check(tmp_path, monkeypatch, ".") == []
    inline = helper.replace("import torch\n", "")
    (tmp_path / "alone.py").write_text(
        textwrap.dedent(loop)
        .replace("{helper}", "")
        .replace("import torch\n", "import torch\n" + inline, 1)
    )
    assert alone(tmp_path / "alone.py") == set()
    # A helper whose backward is after its own region: reported at the call.
    (tmp_path / "steps.py").write_text(
        "import torch\n\ndef backward_in_float32(loss, scaler):\n"
        "    with torch.autocast('cuda', enabled=False):\n        loss = loss.float()\n"
        "    scaler.scale(loss).backward()\n"
    )
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 8)}


def test_a_helper_returning_an_autocast_factory_or_suppress_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_clip's shape: `get_autocast(precision)` returns `partial(torch.amp.autocast, ...)`
    or `contextlib.suppress`, and the loop enters what it returns."""
    write(
        tmp_path,
        {
            "precision.py": """\
                import torch
                from contextlib import suppress
                from functools import partial

                def get_autocast(precision, device_type="cuda"):
                    if precision == "amp":
                        return partial(torch.amp.autocast, device_type=device_type)
                    return suppress
                """,
            "train.py": """\
                from precision import get_autocast

                def train_one_epoch(model, loader, optimizer, scaler, args):
                    autocast = get_autocast(args.precision)
                    for images, texts in loader:
                        with autocast():
                            loss = model(images, texts)
                            scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                """,
        },
    )
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 8)}
    # The backward after the block: quiet.
    train = (tmp_path / "train.py").read_text()
    (tmp_path / "train.py").write_text(
        train.replace("            scaler.scale(loss)", "        scaler.scale(loss)")
    )
    assert check(tmp_path, monkeypatch, ".") == []


def test_a_callable_scaler_wrapper_from_another_module_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timm's `NativeScaler`: its `__call__` runs the scaled backward pass, so calling an
    instance inside autocast is a backward inside autocast."""
    wrapper = """\
        import torch

        class NativeScaler:
            def __init__(self):
                self._scaler = torch.amp.GradScaler("cuda")

            def __call__(self, loss, optimizer):
                self._scaler.scale(loss).backward()
                self._scaler.step(optimizer)
                self._scaler.update()
        """
    train = """\
        import torch
        from misc import NativeScaler

        def train(model, loader, optimizer):
            loss_scaler = NativeScaler()
            for x, y in loader:
                optimizer.zero_grad()
                with torch.autocast("cuda"):
                    loss = model(x, y)
                    loss_scaler(loss, optimizer)
        """
    write(tmp_path, {"misc.py": wrapper, "train.py": train})
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 10)}
    # Called after the block, as timm does: quiet.
    fixed = textwrap.dedent(train).replace("            loss_scaler(", "        loss_scaler(")
    (tmp_path / "train.py").write_text(fixed)
    assert check(tmp_path, monkeypatch, ".") == []


def test_a_comment_saying_autocast_does_not_hide_an_imported_region_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from amp_utils import amp_region

        def step(model, x):
            # mixed precision: autocast region from our helper
            with amp_region():
                loss = model(x).sum()
                loss.backward()
        """
    write(tmp_path, {"amp_utils.py": HELPER_FORWARDING_KEYWORDS, "train.py": train})
    assert found(check(tmp_path, monkeypatch, ".")) == {("AMP001", "train.py", 8)}


def test_words_only_in_comments_cost_no_syntax_tree_when_readmitting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefilter dropped the file for words only in comments: the look through its
    imports decides from those bytes, without parsing the file."""
    import amplint.engine.prefilter as prefilter
    from amplint.engine.prefilter import SourceWords
    from amplint.engine.project import Project
    from amplint.engine.registry import rules_for

    data = (
        b"import torch\n\n"
        b"# an autocast region used to wrap this\n"
        b"def f(loss):\n    loss.backward()\n"
    )
    write(tmp_path, {"grads.py": data.decode()})
    project = Project([str(tmp_path / "grads.py")])

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(prefilter, "inspect_code", no_parse)
    view = project.view(str(tmp_path / "grads.py"))
    assert view.readmit(data, rules_for(["AMP001", "AMP014"]), SourceWords(data)) == []


def test_a_module_that_only_mentions_autocast_lends_no_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Imported modules that say `autocast` without handing one out (dynamo's trackers) do
    not make the importer's backward passes worth analysing."""
    from amplint.engine.prefilter import SourceWords
    from amplint.engine.project import Project
    from amplint.engine.registry import rules_for

    files = {
        "tracking.py": """\
            import torch

            def is_region(obj):
                return isinstance(obj, torch.autocast)
            """,
        "grads.py": """\
            from tracking import is_region

            def run(loss):
                loss.backward()
            """,
    }
    write(tmp_path, files)
    project = Project(str(tmp_path / name) for name in files)
    data = (tmp_path / "grads.py").read_bytes()
    view = project.view(str(tmp_path / "grads.py"))
    assert view.readmit(data, rules_for(["AMP001"]), SourceWords(data)) == []
    # A region the module makes under another name than the one imported lends nothing...
    (tmp_path / "tracking.py").write_text(
        "import torch\n\nREGION = torch.autocast('cuda')\n\ndef is_region(obj):\n"
        "    return isinstance(obj, torch.autocast)\n"
    )
    project = Project(str(tmp_path / name) for name in files)
    view = project.view(str(tmp_path / "grads.py"))
    assert view.readmit(data, rules_for(["AMP001"]), SourceWords(data)) == []
    # ...the imported name itself making one does: the importer is analysed.
    (tmp_path / "tracking.py").write_text(
        "import torch\n\ndef is_region():\n    return torch.autocast('cuda')\n"
    )
    project = Project(str(tmp_path / name) for name in files)
    view = project.view(str(tmp_path / "grads.py"))
    assert [r.code for r in view.readmit(data, rules_for(["AMP001"]), SourceWords(data))] == [
        "AMP001"
    ]


def test_autocast_factories_of_another_module_amp014(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from amp_utils import amp_autocast, region

        scaler = torch.amp.GradScaler("cuda")
        for x in loader:
            with amp_autocast():
                loss = model(x)
            with region():
                loss = loss + model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        """
    amp_utils = """\
        import functools
        import torch

        amp_autocast = functools.partial(torch.autocast, "cuda", dtype=torch.bfloat16)

        def region():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        """
    write(tmp_path, {"amp_utils.py": amp_utils, "train.py": train})
    findings = check(tmp_path, monkeypatch, ".")
    assert found(findings) == {("AMP014", "train.py", 4)}
    assert findings[0]["fix"]["applicability"] == "unsafe"  # `enabled=False`: no shared dtype
    # One float16 region among them: the scaler is needed.
    (tmp_path / "amp_utils.py").write_text(
        textwrap.dedent(amp_utils).replace('"cuda", dtype=torch.bfloat16)\n\n', '"cuda")\n\n')
    )
    assert check(tmp_path, monkeypatch, ".") == []


def test_enabled_scaler_from_a_helper_with_bfloat16_here_amp014(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = """\
        import torch
        from helper import init_opt

        optimizer, scaler = init_opt(model, 0.1)
        for x in loader:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        """
    write(tmp_path, {"helper.py": HELPER, "train.py": train})
    findings = check(tmp_path, monkeypatch, ".")
    assert found(findings) == {("AMP014", "train.py", 4)}
    assert "built at helper.py:6 (through `init_opt`)" in findings[0]["message"]
    assert findings[0]["fix"] is None  # the construction is in another file


@pytest.mark.parametrize(("test", "reported"), [("use_bfloat16", True), ("use_fp16", False)])
def test_a_helpers_scaler_built_only_for_bfloat16_amp014(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test: str, reported: bool
) -> None:
    """I-JEPA's helper: `GradScaler() if use_bfloat16 else None` is built exactly when the
    regions are bfloat16; one built for float16 only is what its author meant."""
    helper = f"""\
        import torch

        def init_opt(model, flag):
            optimizer = torch.optim.AdamW(model.parameters())
            scaler = torch.cuda.amp.GradScaler() if {test} else None
            return optimizer, scaler
        """
    train = """\
        import torch
        from helper import init_opt

        optimizer, scaler = init_opt(model, flag)
        for x in loader:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        """
    write(tmp_path, {"helper.py": helper, "train.py": train})
    findings = [f for f in check(tmp_path, monkeypatch, ".") if f["code"] == "AMP014"]
    assert found(findings) == ({("AMP014", "train.py", 4)} if reported else set())


def test_backward_in_another_modules_helper_called_inside_autocast_amp001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SlowFast's shape: the loop calls, inside autocast, a helper of another module that
    runs the (scaled) backward pass. No fix: what else the helper runs is not read here."""
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/steps.py": """\
                def forward_and_backward(model, x, y, scaler, loss_fn):
                    loss = loss_fn(model(x), y)
                    scaler.scale(loss).backward()
                    return loss.detach()
                """,
            "train.py": """\
                import torch
                from pkg.steps import forward_and_backward

                def train(model, optimizer, loader, loss_fn):
                    scaler = torch.amp.GradScaler("cuda")
                    for x, y in loader:
                        with torch.autocast("cuda"):
                            out = model(x)
                            loss = forward_and_backward(model, x, y, scaler, loss_fn)
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad()
                """,
        },
    )
    (finding,) = check(tmp_path, monkeypatch, ".")
    assert (finding["code"], finding["location"]["row"]) == ("AMP001", 9)
    assert "calls a helper that runs the backward pass" in finding["message"]
    assert finding["fix"] is None or finding["fix"]["applicability"] == "unsafe"
    # Checked alone, train.py cannot see into the helper: quiet, as before.
    assert alone(tmp_path / "train.py") == set()


def test_a_script_in_a_plain_folder_imports_the_projects_top_level_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """yolov5's ``segment/train.py``: no ``__init__.py`` in ``segment/``, and the script
    puts the repository's root on sys.path to import ``utils``. The root's packages are
    found from there too (the folders above the script, up to the files checked)."""
    helper = """\
        def smart_resume(ckpt, optimizer):
            optimizer.load_state_dict(ckpt["optimizer"])
        """
    script = """\
        import torch
        from utils.torch_utils import smart_resume

        def train(model, optimizer, ckpt):
            scaler = torch.amp.GradScaler("cuda")
            smart_resume(ckpt, optimizer)
            scaler.scale(model()).backward()
            scaler.step(optimizer)
            scaler.update()
        """
    write(
        tmp_path,
        {
            "utils/__init__.py": "",
            "utils/torch_utils.py": helper,
            "train.py": script,
            "segment/train.py": script,
        },
    )
    assert found(check(tmp_path, monkeypatch, ".")) == {
        ("AMP013", "train.py", 6),
        ("AMP013", "segment/train.py", 6),
    }


def test_a_folder_without_init_is_a_namespace_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``train/train.py`` runs as ``python -m train.train`` and imports ``from train import
    utils``: ``train/`` has no ``__init__.py``, so Python makes it a namespace package and
    the import names ``train/utils.py``, not an attribute of the script itself. The files
    checked may all sit inside that folder."""
    utils = """\
        import torch

        def save_checkpoint(model, optimizer, path):
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
        """
    script = """\
        import torch
        from train import utils

        def main(model, opt, batches):
            scaler = torch.amp.GradScaler("cuda")
            for x in batches:
                with torch.autocast("cuda"):
                    loss = model(x).sum()
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            utils.save_checkpoint(model, opt, "last.pt")
        """
    write(tmp_path, {"train/utils.py": utils, "train/train.py": script})
    expected = {("AMP013", "train/train.py", 12)}
    assert found(check(tmp_path, monkeypatch, ".")) == expected
    assert found(check(tmp_path, monkeypatch, "train")) == expected


def test_a_checkpoint_handed_to_another_modules_save_wrapper_amp013(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``utils.save_on_master(checkpoint, path)``: the wrapper hands what it is given to
    ``torch.save`` on the main process, so the dict is the checkpoint; a weights-only save
    through the same wrapper stays quiet."""
    utils = """\
        import torch

        def is_main_process():
            return True

        def save_on_master(*args, **kwargs):
            if is_main_process():
                torch.save(*args, **kwargs)
        """
    script = """\
        import torch
        import utils

        def main(model, opt, batches, epochs):
            scaler = torch.amp.GradScaler("cuda")
            for epoch in range(epochs):
                for x in batches:
                    with torch.autocast("cuda"):
                        loss = model(x).sum()
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                utils.save_on_master({"model": model.state_dict()}, "weights.pth")
                state = {"model": model.state_dict(), "opt": opt.state_dict()}
                utils.save_on_master(state, "c.pth")
        """
    write(tmp_path, {"utils.py": utils, "train.py": script})
    (finding,) = check(tmp_path, monkeypatch, ".")
    assert (finding["code"], finding["location"]["row"]) == ("AMP013", 15)
    assert finding["fix"]["applicability"] == "safe"
    # Checked alone, train.py cannot know what the wrapper does: quiet.
    assert alone(tmp_path / "train.py") == set()
    # A wrapper that adds a scaler's state to what it is given before saving it: quiet.
    adding = textwrap.dedent(utils).replace(
        "        torch.save(*args, **kwargs)",
        "        if context.scaler is not None:\n"
        '            args[0]["scaler"] = context.scaler.state_dict()\n'
        "        torch.save(*args, **kwargs)",
    )
    write(tmp_path, {"utils.py": "import context\n" + adding, "context.py": "scaler = None\n"})
    assert check(tmp_path, monkeypatch, ".") == []


def test_a_helper_is_cited_at_its_own_line_when_another_repeats_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two loaders restore the optimizer with the very same line; the message names the
    line of the one called, not the first occurrence of that text in the module."""
    helpers = """\
        import torch

        def load_discriminator(path, disc, optimizer):
            state = torch.load(path)
            disc.load_state_dict(state["disc"])
            optimizer.load_state_dict(state["optimizer"])

        def load_generator(path, gen, optimizer):
            state = torch.load(path)
            gen.load_state_dict(state["gen"])
            optimizer.load_state_dict(state["optimizer"])
        """
    script = """\
        import torch
        from ckutils import load_generator

        def main(gen, opt, batches, path):
            load_generator(path, gen, opt)
            scaler = torch.amp.GradScaler("cuda")
            for x in batches:
                with torch.autocast("cuda"):
                    loss = gen(x).sum()
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        """
    write(tmp_path, {"ckutils.py": helpers, "train.py": script})
    (finding,) = check(tmp_path, monkeypatch, ".")
    assert finding["code"] == "AMP013"
    assert "`load_generator` (ckutils.py:11) restores" in finding["message"]


def test_relative_imports_and_package_reexports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path,
        {
            "pkg/__init__.py": "from .optim.setup import init_opt\n",
            "pkg/optim/__init__.py": "",
            "pkg/optim/setup.py": HELPER,
            "pkg/loop.py": """\
                from . import init_opt

                def run(model, loader):
                    optimizer, gs = init_opt(model, 0.1)
                    for x in loader:
                        gs.scale(model(x)).backward()
                        gs.step(optimizer)
                """,
            "pkg/cli/__init__.py": "",
            "pkg/cli/main.py": """\
                from ..optim import setup
                from pkg.optim.setup import init_opt as make

                def one(model):
                    opt, s1 = setup.init_opt(model, 0.1)
                    s1.scale(model.loss()).backward()
                    s1.step(opt)

                def two(model):
                    opt, s2 = make(model, 0.1)
                    s2.scale(model.loss()).backward()
                    s2.step(opt)
                """,
        },
    )
    assert found(check(tmp_path, monkeypatch, "pkg")) == {
        ("AMP002", "pkg/loop.py", 7),
        ("AMP002", "pkg/cli/main.py", 7),
        ("AMP002", "pkg/cli/main.py", 12),
    }


def test_an_import_that_could_mean_two_files_means_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `from . import helper` then `helper.init_opt` reaches the scope layer as
    # "..helper.init_opt", which `from ..helper import init_opt` is written as too. With
    # both pkg/sub/helper.py and pkg/helper.py present, neither is taken.
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/helper.py": HELPER,
            "pkg/sub/__init__.py": "",
            "pkg/sub/helper.py": HELPER,
            "pkg/sub/train.py": """\
                from . import helper

                optimizer, gs = helper.init_opt(model, 0.1)
                gs.scale(model.loss()).backward()
                gs.step(optimizer)
                """,
        },
    )
    assert check(tmp_path, monkeypatch, "pkg") == []
    (tmp_path / "pkg" / "helper.py").unlink()
    assert found(check(tmp_path, monkeypatch, "pkg")) == {("AMP002", "pkg/sub/train.py", 5)}


# ---------------------------------------------------------------------- fix, cache, subprocess


def test_fix_sees_through_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"helper.py": HELPER, "train.py": TRAIN_NO_UPDATE})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["fix", "--no-cache", "."], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "train.py").read_text() == TRAIN_NO_UPDATE_FIXED
    assert (tmp_path / "helper.py").read_text() == HELPER


def test_cache_rechecks_a_file_when_a_module_it_imports_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"helper.py": HELPER, "train.py": TRAIN_NO_UPDATE})
    assert found(check(tmp_path, monkeypatch, ".", cache=True)) == {("AMP002", "train.py", 10)}
    assert found(check(tmp_path, monkeypatch, ".", cache=True)) == {("AMP002", "train.py", 10)}
    # Only helper.py changes (same size, so the stat alone cannot tell).
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER.replace('GradScaler("cuda")', 'MyScalerX("cuda")'))
    os.utime(helper, ns=(1, 1))
    assert check(tmp_path, monkeypatch, ".", cache=True) == []
    helper.write_text(HELPER)
    assert found(check(tmp_path, monkeypatch, ".", cache=True)) == {("AMP002", "train.py", 10)}
    # train.py checked alone has its own cache entries, with its own findings.
    assert check(tmp_path, monkeypatch, "train.py", cache=True) == []


def test_cache_rechecks_a_file_when_the_module_it_imports_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"train.py": TRAIN_NO_UPDATE, "other.py": "x = 1\n"})
    assert check(tmp_path, monkeypatch, ".", cache=True) == []
    write(tmp_path, {"helper.py": HELPER})
    assert found(check(tmp_path, monkeypatch, ".", cache=True)) == {("AMP002", "train.py", 10)}


def test_subprocess_reports_across_modules(tmp_path: Path) -> None:
    write(tmp_path, {"src/helper.py": HELPER, "src/train.py": TRAIN_NO_UPDATE})
    completed = subprocess.run(
        [*AMPLINT, "check", "src", "--output-format", "concise"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1, completed.stderr
    assert completed.stdout.splitlines()[0].startswith("src/train.py:10:5: AMP002 [*] ")
    alone_run = subprocess.run(
        [*AMPLINT, "check", "src/train.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert alone_run.returncode == 0, alone_run.stdout


def test_a_file_checked_alone_is_analysed_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A buggy single-module loop beside a helper: checked alone, the findings are exactly
    # the engine's for the file's own bytes, with no project (nothing of helper.py read).
    own = """\
        import torch
        from helper import init_opt

        scaler = torch.amp.GradScaler()
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x)
                loss.backward()
            scaler.step(optimizer)
        """
    write(tmp_path, {"helper.py": "raise SystemExit('never read')\n", "train.py": own})
    findings = check(tmp_path, monkeypatch, "train.py")
    assert {(f["code"], f["location"]["row"]) for f in findings} == alone(tmp_path / "train.py")
    assert {f["code"] for f in findings} >= {"AMP001", "AMP002"}


# ---------------------------------------------------------------------- language server


def test_language_server_reads_the_open_buffer_of_an_imported_module(tmp_path: Path) -> None:
    pytest.importorskip("pygls", reason="the language server needs the lsp extra")
    from lsp_helpers import LspClient

    disabled = HELPER.replace('GradScaler("cuda")', 'GradScaler("cuda", enabled=False)')
    write(tmp_path, {"helper.py": disabled, "train.py": TRAIN_NO_UPDATE})
    helper_uri = (tmp_path / "helper.py").as_uri()
    train_uri = (tmp_path / "train.py").as_uri()
    client = LspClient(
        [sys.executable, "-m", "amplint", "server"],
        cwd=tmp_path,
        env={"AMPLINT_CACHE_DIR": str(tmp_path / "cache")},
    )
    try:
        client.initialize(tmp_path, options={"debounceMs": 50})
        # The buffer of helper.py, not yet saved, builds an enabled scaler: train.py uses it.
        mark = client.mark()
        client.open(helper_uri, HELPER)
        client.diagnostics(helper_uri, mark, version=1)
        mark = client.mark()
        client.open(train_uri, TRAIN_NO_UPDATE)
        diagnostics = client.diagnostics(train_uri, mark, version=1)
        assert [(d["code"], d["range"]["start"]["line"]) for d in diagnostics] == [("AMP002", 9)]
        # Editing helper.py's buffer re-checks train.py, which now sees a disabled scaler.
        mark = client.mark()
        client.change(helper_uri, disabled, 2)
        assert client.diagnostics(train_uri, mark, version=1) == []
        assert (tmp_path / "helper.py").read_text() == disabled  # nothing was saved
    finally:
        client.kill()


def test_broken_and_cyclic_modules_leave_the_importer_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path,
        {
            "broken.py": "import torch\n\ndef init_opt(:\n    return torch.amp.GradScaler()\n",
            "a.py": "from b import make\nimport torch\nscaler = torch.amp.GradScaler()\n",
            "b.py": "from a import scaler\n\ndef make():\n    return scaler\n",
            "train.py": """\
                from broken import init_opt
                from b import make

                optimizer, gs = init_opt()
                gs.scale(loss).backward()
                gs.step(optimizer)
                s = make()
                s.scale(loss).backward()
                s.step(optimizer)
                """,
        },
    )
    findings = check(tmp_path, monkeypatch, ".")
    # broken.py gets its one syntax diagnostic and tells train.py nothing; a.py and b.py
    # import each other (no hang), and a scaler handed through a second module is not
    # followed: quiet rather than a guess.
    assert {(f["code"], f["filename"]) for f in findings} == {("AMP999", "broken.py")}
