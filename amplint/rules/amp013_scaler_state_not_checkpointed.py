"""AMP013 scaler-state-not-checkpointed."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.checkpoints import dict_handed_to_saving_helper, is_torch_save
from amplint.analysis.imported import checkpoint_helper_calls
from amplint.analysis.lifecycle import (
    scaler_constructions,
    scalers_reaching,
    scales_losses,
)
from amplint.analysis.model import (
    ModuleModel,
    calls_in,
    mapping_extended,
    method_name,
    receiver,
    walk_body,
)
from amplint.analysis.scalers import named_like_scaler, scaler_like
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.analysis.values import ScalerInstance
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

_Entries = list[tuple[cst.BaseExpression | None, cst.BaseExpression]]
#: A checkpoint dict: a display, or a call of the builtin ``dict`` with keywords.
_Mapping = cst.Dict | cst.Call

#: Checkpoint keys that hold AMP state under another name.
_SCALER_KEY = re.compile(r"scaler|(^|_)amp($|_)", re.IGNORECASE)
#: Calls that may store or restore a scaler they are given.
_CHECKPOINT_CALL = re.compile(r"save|checkpoint|ckpt|state|load|restore|resume|register", re.I)
#: a helper that only writes a checkpoint: handing it the scaler restores nothing.
_SAVE_ONLY = re.compile(r"^(?!.*(load|restore|resume)).*save", re.I)


class ScalerStateNotCheckpointed(Rule):
    code = "AMP013"
    tokens = (("state_dict", "load_state_dict"), ("~scaler",))

    valid = (
        # The recipe.
        """
import torch
scaler = torch.amp.GradScaler()
checkpoint = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
torch.save(checkpoint, "ckpt.pt")
checkpoint = torch.load("ckpt.pt")
optimizer.load_state_dict(checkpoint["optimizer"])
scaler.load_state_dict(checkpoint["scaler"])
""",
        # Weights only.
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
torch.save(model.state_dict(), "weights.pt")
torch.save({"model": model.state_dict(), "epoch": epoch}, "weights.pt")
""",
        # Added later, when AMP is on (torchvision references).
        """
import torch
scaler = torch.cuda.amp.GradScaler() if args.amp else None
checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
if args.amp:
    checkpoint["scaler"] = scaler.state_dict()
torch.save(checkpoint, "ckpt.pt")
""",
        # A helper given the scaler saves it.
        """
import torch
from utils import save_checkpoint
scaler = torch.amp.GradScaler()
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "last.pt")
save_checkpoint(model, optimizer, scaler, "full.pt")
""",
        # Under another key name (timm: "amp_scaler"; apex: "amp").
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
torch.save({"optimizer": optimizer.state_dict(), "amp": loss_scaler.state_dict()}, "ckpt.pt")
""",
        # Weights only, through a wrapper that hands its arguments on to `torch.save`.
        """
import torch

def save_on_master(*args, **kwargs):
    if is_main_process():
        torch.save(*args, **kwargs)

scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
save_on_master({"model": model.state_dict(), "epoch": epoch}, "weights.pt")
""",
        # A disabled scaler holds no state.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
train(model, optimizer, scaler)
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
""",
        # No GradScaler in the module (bfloat16 training).
        """
import torch
with torch.autocast("cuda", dtype=torch.bfloat16):
    loss = model(x)
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
""",
        # A scaler this module never uses (a framework does the backward).
        """
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler()

    def save(self, path):
        torch.save({"optimizer": self.optimizer.state_dict()}, path)
""",
        # A dict spread from elsewhere may hold it.
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
torch.save({**extra_state, "optimizer": optimizer.state_dict()}, "ckpt.pt")
""",
        # The whole scaler object is pickled into the checkpoint.
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
torch.save({"optimizer": optimizer.state_dict(), "grad": scaler}, "ckpt.pt")
""",
        # A script's float32 warm-up checkpoint, saved before the GradScaler exists.
        """
import torch
for x in loader:
    optimizer.zero_grad()
    model(x).mean().backward()
    optimizer.step()
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "warmup.pt")
scaler = torch.amp.GradScaler("cuda")
for x in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = model(x).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # The same in a script's `main()`.
        """
import torch
def main(model, optimizer, loader):
    for x in loader:
        optimizer.zero_grad()
        model(x).mean().backward()
        optimizer.step()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "warm.pt")
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = model(x).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # Entries added under computed keys may hold it.
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
ckpt = {"optimizer": optimizer.state_dict()}
for key, part in parts.items():
    ckpt[key] = part.state_dict()
torch.save(ckpt, "ckpt.pt")
""",
        # `dict(...)` with the scaler's state under a keyword.
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
torch.save(dict(optimizer=optimizer.state_dict(), scaler=scaler.state_dict()), "ckpt.pt")
""",
        # A `dict` of the module's own (not the builtin) may add anything.
        """
import torch
from utils import make_checkpoint as dict
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
torch.save(dict(optimizer=optimizer.state_dict()), "ckpt.pt")
""",
        # The load side restores the scaler through a resume helper.
        """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
ckpt = torch.load(path)
optimizer.load_state_dict(ckpt["optimizer"])
resume_amp(ckpt, scaler)
""",
        # A test class: one test trains with a scaler, another checkpoints a plain optimizer.
        """
import torch
class DistributedTest:
    def test_amp(self):
        scaler = torch.amp.GradScaler()
        scaler.scale(self.model(x)).backward()
        scaler.step(self.optimizer)
        scaler.update()

    def test_checkpoint(self):
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        torch.save({"optimizer": optimizer.state_dict()}, self.path)
        optimizer.load_state_dict(torch.load(self.path)["optimizer"])
""",
    )
    invalid = (
        # The checkpoint holds the scaler's state, but the resume never restores it.
        Invalid(
            """
import torch

def train(model, optimizer, loader, resume=None):
    scaler = torch.amp.GradScaler("cuda")
    if resume:
        ckpt = torch.load(resume)
        optimizer.load_state_dict(ckpt["optimizer"])
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, "last.pt")
""",
            line=8,
        ),
        # One record written to a bucket or to a file: one missing piece, said once.
        Invalid(
            """
import io
from dataclasses import asdict, dataclass
import torch

def upload(obj, url):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    send(buffer, url)

@dataclass
class Snapshot:
    model_state: dict
    optimizer_state: dict

def train(model, optimizer, loader, path):
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    snapshot = asdict(Snapshot(model.state_dict(), optimizer.state_dict()))
    if path.startswith("s3://"):
        upload(snapshot, path)
    else:
        torch.save(snapshot, path)
""",
            line=24,
        ),
        # The restore lives in a function nested in the one that trains (apex's examples).
        Invalid(
            """
import torch

def main(model, optimizer, loader, path, resume_from=None):
    scaler = torch.amp.GradScaler("cuda")
    if resume_from:
        def resume():
            checkpoint = torch.load(resume_from)
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        resume()
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=10,
        ),
        # A wrapper that saves on the main process only hands its arguments on to
        # `torch.save` (torchvision's references, DETR, DeiT).
        Invalid(
            """
import torch

def save_on_master(*args, **kwargs):
    if is_main_process():
        torch.save(*args, **kwargs)

def train(net, opt, loader, epochs):
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        for x in loader:
            scaler.scale(net(x)).backward()
            scaler.step(opt)
            scaler.update()
        state = {"net": net.state_dict(), "opt": opt.state_dict()}
        save_on_master(state, f"checkpoint_{epoch}.pth")
""",
            line=16,
            fixed="""
import torch

def save_on_master(*args, **kwargs):
    if is_main_process():
        torch.save(*args, **kwargs)

def train(net, opt, loader, epochs):
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        for x in loader:
            scaler.scale(net(x)).backward()
            scaler.step(opt)
            scaler.update()
        state = {"net": net.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict()}
        save_on_master(state, f"checkpoint_{epoch}.pth")
""",
        ),
        # The helper's dict goes through a second helper that writes a temporary file.
        Invalid(
            """
import shutil
import torch

def write_atomically(state, path):
    torch.save(state, path + ".tmp")
    shutil.move(path + ".tmp", path)

def save_checkpoint(model, optimizer, path):
    write_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)

def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    save_checkpoint(model, optimizer, "last.pt")
""",
            line=18,
        ),
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
train(net, opt, scaler)
torch.save({"net": net.state_dict(), "opt": opt.state_dict()}, "c")
""",
            line=5,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
train(net, opt, scaler)
torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict()}, "c")
""",
        ),
        # A multi-line dict bound to a name, in a method of a trainer with self.scaler.
        Invalid(
            """
import torch
from torch.amp import GradScaler
class Trainer:
    def __init__(self, cfg):
        self.scaler = GradScaler(enabled=cfg.fp16)

    def backward(self, loss):
        self.scaler.scale(loss).backward()

    def save(self, path):
        state = {
            'model': self.model.state_dict(),
            'optimizer': self.optimizer.state_dict(),
        }
        torch.save(state, path)
""",
            line=16,
            fixed="""
import torch
from torch.amp import GradScaler
class Trainer:
    def __init__(self, cfg):
        self.scaler = GradScaler(enabled=cfg.fp16)

    def backward(self, loss):
        self.scaler.scale(loss).backward()

    def save(self, path):
        state = {
            'model': self.model.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'scaler': self.scaler.state_dict(),
        }
        torch.save(state, path)
""",
        ),
        # A one-entry multi-line dict with a scaler parameter.
        Invalid(
            """
import torch
def checkpoint(opt, scaler, path):
    torch.save({
        "optimizer": opt.state_dict()
    }, path)

def train(model, opt, scaler):
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(opt)
        scaler.update()
""",
            line=4,
            fixed="""
import torch
def checkpoint(opt, scaler, path):
    torch.save({
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict()
    }, path)

def train(model, opt, scaler):
    for x in loader:
        scaler.scale(model(x)).backward()
        scaler.step(opt)
        scaler.update()
""",
        ),
        # Trailing comments on every line stay on their own entries' lines.
        Invalid(
            """
import torch
def save(model, opt, scaler, path):
    state = {  # everything to resume
        "model": model.state_dict(),  # weights
        "optimizer": opt.state_dict()  # moments
    }
    torch.save(state, path)

def step(loss, scaler):
    scaler.scale(loss).backward()
""",
            line=8,
            fixed="""
import torch
def save(model, opt, scaler, path):
    state = {  # everything to resume
        "model": model.state_dict(),  # weights
        "optimizer": opt.state_dict(),  # moments
        "scaler": scaler.state_dict()
    }
    torch.save(state, path)

def step(loss, scaler):
    scaler.scale(loss).backward()
""",
        ),
        # A comment only on the last entry (yolov5 train.py) keeps to it, not to the new one.
        Invalid(
            """
import torch
from datetime import datetime
def save(model, opt, scaler, path):
    torch.save({
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "date": datetime.now().isoformat(),  # noqa: DTZ005
    }, path)

def step(loss, scaler):
    scaler.scale(loss).backward()
""",
            line=5,
            fixed="""
import torch
from datetime import datetime
def save(model, opt, scaler, path):
    torch.save({
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "date": datetime.now().isoformat(),  # noqa: DTZ005
        "scaler": scaler.state_dict(),
    }, path)

def step(loss, scaler):
    scaler.scale(loss).backward()
""",
        ),
        # A trailing comma with comments, and a commented-out entry before the brace.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
ckpt = {
    "model": model.state_dict(),  # weights
    "optimizer": optimizer.state_dict(),  # moments

    # "ema": ema.state_dict(),
}
torch.save(ckpt, "ckpt.pt")
""",
            line=11,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
train(model, optimizer, scaler)
ckpt = {
    "model": model.state_dict(),  # weights
    "optimizer": optimizer.state_dict(),  # moments

    # "ema": ema.state_dict(),
    "scaler": scaler.state_dict(),
}
torch.save(ckpt, "ckpt.pt")
""",
        ),
        # A one-line dict grows on its line, its comment still last.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
train(net, opt, scaler)
ckpt = {"net": net.state_dict(), "opt": opt.state_dict()}  # all
torch.save(ckpt, "ckpt.pt")
""",
            line=6,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
train(net, opt, scaler)
ckpt = {"net": net.state_dict(), "opt": opt.state_dict(), "scaler": scaler.state_dict()}  # all
torch.save(ckpt, "ckpt.pt")
""",
        ),
        # The brace closes on the last entry's line, a comment after it: the new entry joins
        # that line, so the comment stays with the entry it was written for.
        Invalid(
            """
import torch
def save(model, opt, scaler, path):
    state = {"model": model.state_dict(),  # weights
             "optimizer": opt.state_dict()}  # moments
    torch.save(state, path)

def step(loss, scaler):
    scaler.scale(loss).backward()
""",
            line=6,
            fixed="""
import torch
def save(model, opt, scaler, path):
    state = {"model": model.state_dict(),  # weights
             "optimizer": opt.state_dict(), "scaler": scaler.state_dict()}  # moments
    torch.save(state, path)

def step(loss, scaler):
    scaler.scale(loss).backward()
""",
        ),
        # The scaler may be None: reported, no fix.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler() if args.amp else None
train(model, optimizer, scaler)
torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch}, "ckpt.pt")
""",
            line=5,
        ),
        # The load side: report only.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
if args.resume:
    checkpoint = torch.load(args.resume, map_location="cpu")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
train(model, optimizer, scaler)
""",
            line=7,
        ),
        # Grown after it was built, but only with the weights (NVIDIA's SSD): reported, and
        # fixed in the display.
        Invalid(
            """
import torch
def train(model, optimizer, loader, epochs):
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        state = {"epoch": epoch, "optimizer": optimizer.state_dict()}
        state["model"] = model.state_dict()
        torch.save(state, "last.pt")
""",
            line=14,
            fixed="""
import torch
def train(model, optimizer, loader, epochs):
    scaler = torch.amp.GradScaler("cuda")
    for epoch in range(epochs):
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
        state["model"] = model.state_dict()
        torch.save(state, "last.pt")
""",
        ),
        # The checkpoint built with `dict(...)` keywords (vicreg): reported, no fix.
        Invalid(
            """
import torch
def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        with torch.autocast("cuda"):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    state = dict(model=model.state_dict(), optimizer=optimizer.state_dict())
    torch.save(state, "last.pt")
""",
            line=12,
        ),
        # Grown with `update(...)` by other keys only.
        Invalid(
            """
import torch
def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        with torch.autocast("cuda"):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    state = {"optimizer": optimizer.state_dict()}
    state.update(model=model.state_dict(), epoch=1)
    torch.save(state, "last.pt")
""",
            line=13,
            fixed="""
import torch
def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        with torch.autocast("cuda"):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
    state.update(model=model.state_dict(), epoch=1)
    torch.save(state, "last.pt")
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        if not scales_losses(model):
            return
        saves_scaler = _scaler_method_anywhere(model, "state_dict")
        loads_scaler = _scaler_method_anywhere(model, "load_state_dict")
        restores: set[cst.CSTNode] = set()  # load paths already reported
        saved: set[int] = set()  # checkpoint values already reported
        for call in model.index.calls:
            if model.is_dead(call):
                continue
            if not saves_scaler and is_torch_save(model, call):
                if _trains_with_a_scaler(model, call) and not _before_the_scalers(model, call):
                    self._check_save(context, call, saved)
            elif not saves_scaler and _handed_dict_lacks_scaler(model, call):
                mapping = dict_handed_to_saving_helper(model, call)
                assert mapping is not None
                if id(mapping) in saved:
                    continue
                saved.add(id(mapping))
                context.report(
                    call,
                    "checkpoint saves the optimizer's state but not the GradScaler's: a "
                    "resumed run restarts the loss scale at 65536 and skips steps until it "
                    "adapts again; add `scaler.state_dict()` to it",
                    _add_scaler(model, call, mapping),
                )
            elif not saves_scaler and _calls_saving_helper(model, call):
                context.report(
                    call,
                    f"`{model.helper_of(call).name.value}` saves the optimizer's state but "  # type: ignore[union-attr]
                    "is not handed the GradScaler, whose state the checkpoint then lacks: a "
                    "resumed run restarts the loss scale at 65536; pass the scaler and save "
                    "`scaler.state_dict()` too",
                )
            elif not loads_scaler and _is_optimizer_load(model, call):
                if _hands_scaler_to_checkpointing(
                    model, call, restoring=True
                ) or not _trains_with_a_scaler(model, call):
                    continue
                # One restore missing from one load path is one finding, however many
                # branches (plain / sharded optimizer) restore the optimizer.
                path = model.index.enclosing_function(call) or model.module
                if path in restores:
                    continue
                restores.add(path)
                context.report(
                    call,
                    "the optimizer's state is restored from a checkpoint but the GradScaler's "
                    "is not: the resumed run restarts the loss scale at 65536 and skips steps "
                    "until it adapts again; also call `scaler.load_state_dict(...)`",
                )
        for helper in checkpoint_helper_calls(model):
            saved = saves_scaler if helper.side == "save" else loads_scaler
            if saved or helper.reported_there or model.is_dead(helper.call):
                continue
            if not _trains_with_a_scaler(model, helper.call):
                continue
            if _hands_scaler_to_checkpointing(model, helper.call):
                continue  # another helper is given the scaler to save or restore
            verb = "saves" if helper.side == "save" else "restores"
            context.report(
                helper.call,
                f"`{helper.name}` ({helper.where}) {verb} the optimizer's state but not the "
                "GradScaler's, which this module trains with: a resumed run restarts the loss "
                "scale at 65536 and skips steps until it adapts again",
            )

    def _check_save(self, context: RuleContext, call: cst.Call, saved: set[int]) -> None:
        model = context.model
        if not _saves_optimizer_without_scaler(model, call):
            return
        if _hands_scaler_to_checkpointing(model, call):
            return
        found = _checkpoint_dict(model, call)
        mapping = found[0] if found is not None else None
        # `torch.save(ckpt, last)`, then `torch.save(ckpt, best)` (or a local file, else an
        # upload of the same record): one missing piece.
        written: cst.CSTNode | None = mapping
        first = call.args[0].value
        if written is None and isinstance(first, cst.Name):
            written = _reaching_value(model, first, call)
        if written is not None:
            if id(written) in saved:
                return
            saved.add(id(written))
        context.report(
            call,
            "checkpoint saves the optimizer's state but not the GradScaler's: a resumed run "
            "restarts the loss scale at 65536 and skips steps until it adapts again; add "
            "`scaler.state_dict()` to it",
            _add_scaler(model, call, mapping) if isinstance(mapping, cst.Dict) else None,
        )


def _trains_with_a_scaler(model: ModuleModel, call: cst.Call) -> bool:
    """A GradScaler is at hand where ``call`` runs: built or used by its function (its class,
    for one kept on ``self``), or handed to it as a parameter; for a function nested in
    another (apex's ``def resume():`` inside ``main``), by the function around it. A scaler
    elsewhere in the module (another test of a large test class) says nothing about this
    checkpoint."""
    reach = scalers_reaching(model, call)
    if reach.constructions or reach.opaque:
        return True
    function = model.index.enclosing_function(call)
    if function is None:
        return False
    params = [*function.params.params, *function.params.kwonly_params]
    if any(named_like_scaler(param.name.value) for param in params):
        return True
    outer = model.index.enclosing_function(function)
    return outer is not None and _trains_with_a_scaler(model, function)


def _before_the_scalers(model: ModuleModel, save: cst.Call) -> bool:
    """A save that runs before every GradScaler it could hold is built (a float32 warm-up's
    checkpoint, a notebook's earlier cell, the same under `if __name__ == "__main__":` or in
    `main()`): there is no scaler state to save yet, nor a name to save it by. A load there
    still should restore it, once it is built."""
    reach = scalers_reaching(model, save)
    if reach.opaque or not reach.constructions:
        return False
    return all(_runs_before(model, save, c.call) for c in reach.constructions)


def _runs_before(model: ModuleModel, first: cst.CSTNode, second: cst.CSTNode) -> bool:
    """Whether ``first`` surely runs before ``second`` is reached, and never after it: both
    in one function's (or the module's) block, ``first`` in an earlier statement of it, with
    no loop around that block within the function."""
    function = model.index.enclosing_function(first)
    if model.index.enclosing_function(second) is not function:
        return False
    chain = [second, *model.index.ancestors(second)]
    on_chain = {id(node) for node in chain}
    for node in (first, *model.index.ancestors(first)):
        block = model.index.parent(node)
        if block is None or id(block) not in on_chain:
            continue
        if not isinstance(block, (cst.IndentedBlock, cst.Module)):
            return False  # `if ...: save` / `else: build`: not one after the other
        later = next(n for n in chain if model.index.parent(n) is block)
        statements = list(block.body)
        if statements.index(node) >= statements.index(later):  # type: ignore[arg-type]
            return False
        for around in model.index.ancestors(block):
            if around is function:
                break
            if isinstance(around, (cst.For, cst.While)):
                return False  # the next pass saves after this one built it
        return True
    return False


def _is_optimizer_load(model: ModuleModel, call: cst.Call) -> bool:
    """``optimizer.load_state_dict(checkpoint["optimizer"])``, or of a field of a record
    class of the module rebuilt from a checkpoint (``snapshot.optimizer_state``)."""
    target = receiver(call)
    if method_name(call) != "load_state_dict" or target is None or not call.args:
        return False
    value = call.args[0].value
    if not isinstance(value, cst.Subscript) and not _record_field(model, value, call):
        return False
    return model.is_optimizer(target)


def _record_field(model: ModuleModel, value: cst.BaseExpression, use: cst.Call) -> bool:
    if not isinstance(value, cst.Attribute) or not isinstance(value.value, cst.Name):
        return False
    record = _reaching_value(model, value.value, use)
    return (
        isinstance(record, cst.Call)
        and isinstance(record.func, cst.Name)
        and record.func.value in model.index.class_by_name
        and _is_record_class(model.index.class_by_name[record.func.value].node)
    )


def _is_record_class(node: cst.ClassDef) -> bool:
    """A ``@dataclass`` or a ``NamedTuple`` subclass."""
    decorators = {
        (dotted_name(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator) or "")
        for d in node.decorators
    }
    bases = {dotted_name(b.value) or "" for b in node.bases}
    return any(d.rsplit(".", 1)[-1] == "dataclass" for d in decorators) or any(
        b.rsplit(".", 1)[-1] == "NamedTuple" for b in bases
    )


def _scaler_method_anywhere(model: ModuleModel, method: str) -> bool:
    return any(
        method_name(c) == method and scaler_like(model, receiver(c)) for c in model.index.calls
    )


def _saves_optimizer_without_scaler(model: ModuleModel, call: cst.Call) -> bool:
    """``torch.save`` of a checkpoint (a dict, or a dataclass / NamedTuple turned into one)
    that holds an optimizer's state and surely nothing of a scaler."""
    found = _checkpoint_dict(model, call)
    if found is not None:
        mapping, name = found
        entries = _dict_entries(mapping)
    else:
        record = _checkpoint_record(model, call)
        if record is None:
            return False
        entries, name = record
    if entries is None:
        return False
    if not _holds_optimizer_state(model, entries) or _holds_scaler(model, entries):
        return False
    return name is None or not _extended_later(model, call, name)


def _handed_dict_lacks_scaler(model: ModuleModel, call: cst.Call) -> bool:
    mapping = dict_handed_to_saving_helper(model, call)
    if mapping is None:
        return False
    entries = _dict_entries(mapping)
    return (
        entries is not None
        and _holds_optimizer_state(model, entries)
        and not _holds_scaler(model, entries)
        and _trains_with_a_scaler(model, call)
        and not _hands_scaler_to_checkpointing(model, call)
    )


def _calls_saving_helper(model: ModuleModel, call: cst.Call) -> bool:
    """``save_checkpoint(model, optimizer)``: a helper of this module that saves the
    optimizer's state without a scaler, called where a scaler trains but not handed it."""
    helper = model.helper_of(call)
    if helper is None or model.index.enclosing_function(call) is helper:
        return False
    params = [*helper.params.params, *helper.params.kwonly_params]
    if any(named_like_scaler(p.name.value) for p in params) or helper.params.star_kwarg:
        return False
    points = _save_points(model, helper)
    if not points or not all(lacks_scaler for _, lacks_scaler in points):
        return False
    saves = [c for c, _ in points]
    if any(_trains_with_a_scaler(model, c) for c in saves):
        return False  # the helper trains with a scaler of its own: reported inside it
    if any(_mentions_scaler(model, arg.value) for arg in call.args):
        return False
    return _trains_with_a_scaler(model, call) and not _hands_scaler_to_checkpointing(model, call)


def _save_points(model: ModuleModel, helper: cst.FunctionDef) -> list[tuple[cst.Call, bool]]:
    """Where ``helper`` writes a checkpoint, and whether that one holds an optimizer's state
    and surely nothing of a scaler: its ``torch.save`` calls, and the dicts it hands to a
    saving helper of its own (``my_save({"optimizer": ...}, path)``, a save behind a
    temporary file)."""
    points: list[tuple[cst.Call, bool]] = []
    for call in calls_in(helper.body):
        if model.is_dead(call):
            continue
        if is_torch_save(model, call):
            points.append((call, _saves_optimizer_without_scaler(model, call)))
            continue
        mapping = dict_handed_to_saving_helper(model, call)
        if mapping is not None:
            entries = _dict_entries(mapping)
            lacks = (
                entries is not None
                and _holds_optimizer_state(model, entries)
                and not _holds_scaler(model, entries)
            )
            points.append((call, lacks))
    return points


def _dict_entries(mapping: _Mapping) -> _Entries | None:
    """(key, value) of each element; None when a ``**spread`` (or, for ``dict(...)``, a
    positional argument) may hold anything."""
    entries: _Entries = []
    if isinstance(mapping, cst.Call):
        for arg in mapping.args:
            if arg.keyword is None:  # `dict(other)`, `dict(**other)`
                return None
            entries.append((cst.SimpleString(repr(arg.keyword.value)), arg.value))
        return entries
    for element in mapping.elements:
        if isinstance(element, cst.StarredDictElement):
            return None
        entries.append((element.key, element.value))
    return entries


def _checkpoint_dict(model: ModuleModel, call: cst.Call) -> tuple[_Mapping, str | None] | None:
    """The dict ``torch.save`` writes, written as a display or as ``dict(key=...)``, and
    the name it goes by, if any."""
    value = call.args[0].value
    if _is_mapping(model, value):
        return value, None  # type: ignore[return-value]
    if isinstance(value, cst.Name):
        node = _reaching_value(model, value, call)
        if node is not None and _is_mapping(model, node):
            return node, value.value  # type: ignore[return-value]
    return None


def _is_mapping(model: ModuleModel, node: cst.BaseExpression) -> bool:
    """A dict display, or a call of the builtin ``dict`` (no binding of the name shadows it)."""
    if isinstance(node, cst.Dict):
        return True
    return (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Name)
        and node.func.value == "dict"
        and not model.index.scope_of(node.func).lookup("dict")
    )


def _reaching_value(
    model: ModuleModel, name: cst.Name, use: cst.CSTNode
) -> cst.BaseExpression | None:
    """The value last assigned to ``name`` before ``use`` in straight-line code of the same
    function (``ckpt = torch.load(...)`` on resume, ``ckpt = {...}`` at save time)."""
    bindings = model.index.scope_of(name).lookup(name.value)
    if not bindings or any(b.kind is not BindingKind.ASSIGN for b in bindings):
        return None
    if len(bindings) == 1:
        node = bindings[0].node
        return node if isinstance(node, cst.BaseExpression) else None
    function = model.index.enclosing_function(use)
    unit = function.body if function is not None else model.module
    values = {id(b.node): b.node for b in bindings}
    last: cst.CSTNode | None = None
    for node in walk_body(unit):
        if node is use:
            break
        if id(node) in values:
            last = node
    return last if isinstance(last, cst.BaseExpression) else None


_ASDICT = frozenset({"dataclasses.asdict", "dataclasses.astuple"})


def _checkpoint_record(
    model: ModuleModel, call: cst.Call
) -> tuple[list[tuple[cst.BaseExpression | None, cst.BaseExpression]] | None, str | None] | None:
    """``torch.save(asdict(state), path)`` / ``torch.save(state._asdict(), path)`` with
    ``state`` built from a dataclass or NamedTuple of this module: its fields as entries."""
    value: cst.BaseExpression | None = call.args[0].value
    if isinstance(value, cst.Name):
        value = _reaching_value(model, value, call)  # `snapshot = asdict(snapshot)` first
    if not isinstance(value, cst.Call):
        return None
    if method_name(value) == "_asdict" and not value.args:
        record = receiver(value)
    elif model.evaluator.qualified_names(value.func) & _ASDICT and value.args:
        record = value.args[0].value
    else:
        return None
    name = None
    if isinstance(record, cst.Name):
        name = record.value
        record = _reaching_value(model, record, value)
    if not isinstance(record, cst.Call) or not isinstance(record.func, cst.Name):
        return None
    cls = model.index.class_by_name.get(record.func.value)
    if cls is None:
        return None
    fields = [
        s.body[0].target.value
        for s in cls.node.body.body
        if isinstance(s, cst.SimpleStatementLine)
        and isinstance(s.body[0], cst.AnnAssign)
        and isinstance(s.body[0].target, cst.Name)
    ]
    entries: list[tuple[cst.BaseExpression | None, cst.BaseExpression]] = []
    position = 0
    for arg in record.args:
        if arg.star:
            return None, name
        if arg.keyword is not None:
            key: str | None = arg.keyword.value
        else:
            key = fields[position] if position < len(fields) else None
            position += 1
        entries.append((cst.SimpleString(repr(key)) if key is not None else None, arg.value))
    return entries, None


def _holds_optimizer_state(model: ModuleModel, entries: _Entries) -> bool:
    for _, value in entries:
        if isinstance(value, cst.Call) and method_name(value) == "state_dict":
            target = receiver(value)
            if target is not None and model.is_optimizer(target):
                return True
    return False


def _holds_scaler(model: ModuleModel, entries: _Entries) -> bool:
    for key, value in entries:
        if isinstance(key, cst.SimpleString) and _SCALER_KEY.search(str(key.evaluated_value)):
            return True
        if not isinstance(key, (cst.SimpleString, cst.Integer)):
            return True  # computed keys: cannot tell
        if _mentions_scaler(model, value):
            return True
    return False


def _mentions_scaler(model: ModuleModel, node: cst.CSTNode) -> bool:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (cst.Name, cst.Attribute)) and scaler_like(model, current):
            return True
        stack.extend(current.children)
    return False


def _extended_later(model: ModuleModel, save: cst.Call, name: str) -> bool:
    """``checkpoint["scaler"] = ...`` / ``checkpoint.update(...)`` in the same function
    (``checkpoint["model"] = model.state_dict()`` adds no scaler)."""
    function = model.index.enclosing_function(save)
    unit = function.body if function is not None else model.module
    return mapping_extended(
        _walk(unit), name, lambda key, value: _holds_scaler(model, [(key, value)])
    )


def _walk(node: cst.CSTNode) -> list[cst.CSTNode]:
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(current.children)
    return found


def _hands_scaler_to_checkpointing(
    model: ModuleModel, call: cst.Call, restoring: bool = False
) -> bool:
    """The function (or script) gives the scaler to a save/load/resume helper; to one that
    may restore it, when ``restoring`` (a save of ``scaler.state_dict()`` restores nothing)."""
    function = model.index.enclosing_function(call)
    unit = function.body if function is not None else model.module
    for other in calls_in(unit):
        if other is call:
            continue
        name = method_name(other) or (other.func.value if isinstance(other.func, cst.Name) else "")
        if not name or not _CHECKPOINT_CALL.search(name):
            continue
        if restoring and (is_torch_save(model, other) or _SAVE_ONLY.search(name)):
            continue
        if any(_mentions_scaler(model, arg.value) for arg in other.args):
            return True
    return False


def _scaler_in_scope(model: ModuleModel, save: cst.Call) -> str | None:
    """The one expression that names a never-None GradScaler where ``save`` runs."""
    candidates: set[str] = set()
    scope = model.index.scope_of(save)
    save_class = model.index.enclosing_class(save)
    for construction in scaler_constructions(model):
        target = construction.target
        if target is None:
            continue
        if target.startswith("self."):
            owner = model.index.enclosing_class(construction.call)
            if owner is not None and owner is save_class and target.count(".") == 1:
                bindings = owner.attributes.get(target[5:], [])
                if _never_none(model, bindings):
                    candidates.add(target)
                else:
                    return None
        elif "." not in target:
            bindings = scope.lookup(target)
            if any(b.node is construction.call for b in bindings):
                if _never_none(model, bindings):
                    candidates.add(target)
                else:
                    return None
    function = model.index.enclosing_function(save)
    if function is not None:
        for param in [*function.params.params, *function.params.kwonly_params]:
            if named_like_scaler(param.name.value):
                if param.default is not None:
                    return None  # `scaler=None`
                candidates.add(param.name.value)
    return candidates.pop() if len(candidates) == 1 else None


def _never_none(model: ModuleModel, bindings: list) -> bool:  # type: ignore[type-arg]
    for binding in bindings:
        if binding.kind is not BindingKind.ASSIGN or binding.node is None:
            return False
        values = model.evaluator.evaluate(binding.node, binding.scope)
        if not values or not all(isinstance(v, ScalerInstance) for v in values):
            return False
    return True


def _add_scaler(model: ModuleModel, save: cst.Call, mapping: cst.Dict) -> FixPlan | None:
    scaler = _scaler_in_scope(model, save)
    if scaler is None or not mapping.elements:
        return None
    quote = _key_quote(mapping)
    entry = cst.DictElement(
        key=cst.SimpleString(f"{quote}scaler{quote}"),
        value=cst.parse_expression(f"{scaler}.state_dict()"),
    )
    return FixPlan(
        f"Save `{scaler}.state_dict()` in the checkpoint", {mapping: _append(mapping, entry)}
    )


def _key_quote(mapping: cst.Dict) -> str:
    """The quote the dict's first key uses, so the new key matches it."""
    first = mapping.elements[0]
    key = first.key if isinstance(first, cst.DictElement) else None
    return "'" if isinstance(key, cst.SimpleString) and key.value.startswith("'") else '"'


def _append(mapping: cst.Dict, entry: cst.DictElement) -> cst.Dict:
    """``mapping`` with ``entry`` last, laid out like the entries before it.

    Every comment stays on the line it was on, and a trailing comma after the last entry
    (or its absence) carries over to the new last entry.
    """
    *rest, last = mapping.elements
    separator = _entry_separator(mapping)
    closing = mapping.rbrace.whitespace_before
    between = separator.whitespace_after
    if not isinstance(between, cst.ParenthesizedWhitespace) or not isinstance(
        closing, cst.ParenthesizedWhitespace
    ):
        # Entries on one line, or the brace closes on the last entry's line (a comment after
        # it, outside this dict, may suppress a lint finding on that entry): the new entry
        # goes on the last entry's line, and what followed the last (its trailing comma, a
        # comment before a brace on the next line) now follows the new one.
        if isinstance(between, cst.ParenthesizedWhitespace):
            separator = separator.with_changes(whitespace_after=cst.SimpleWhitespace(" "))
        return mapping.with_changes(
            elements=[
                *rest,
                last.with_changes(comma=separator),
                entry.with_changes(comma=last.comma),
            ]
        )
    # One entry a line and the brace on a line of its own. libcst keeps the last entry's
    # trailing comment (and any comment lines before the brace) in the brace's whitespace,
    # not in the entry's comma: that whitespace now ends the last entry's line, indented
    # for the new entry, and the brace gets a bare line break of its own.
    trailing = last.comma if isinstance(last.comma, cst.Comma) else None
    kept = closing.with_changes(indent=between.indent, last_line=between.last_line)
    comma = cst.Comma(
        whitespace_before=(trailing or separator).whitespace_before, whitespace_after=kept
    )
    bare = cst.ParenthesizedWhitespace(
        first_line=cst.TrailingWhitespace(newline=closing.first_line.newline),
        indent=closing.indent,
        last_line=closing.last_line,
    )
    return mapping.with_changes(
        elements=[*rest, last.with_changes(comma=comma), entry.with_changes(comma=last.comma)],
        rbrace=mapping.rbrace.with_changes(whitespace_before=bare),
    )


def _entry_separator(mapping: cst.Dict) -> cst.Comma:
    """A comma laid out like the one before the last entry (or, for a one-entry dict, like
    the opening brace's line break), without its comments: they belong to that line."""
    if len(mapping.elements) >= 2 and isinstance(mapping.elements[-2].comma, cst.Comma):
        before = mapping.elements[-2].comma.whitespace_before
        after = mapping.elements[-2].comma.whitespace_after
    else:
        before = cst.SimpleWhitespace("")
        after = mapping.lbrace.whitespace_after
        if not isinstance(after, cst.ParenthesizedWhitespace):
            after = cst.SimpleWhitespace(" ")
    if isinstance(after, cst.ParenthesizedWhitespace):
        after = after.with_changes(
            first_line=cst.TrailingWhitespace(newline=after.first_line.newline), empty_lines=[]
        )
    return cst.Comma(whitespace_before=before, whitespace_after=after)
