"""Gradient clipping: which calls clip, and how. One detector for every rule."""

from __future__ import annotations

import re
from typing import Literal

import libcst as cst

from amplint.analysis.model import ModuleModel, method_name, receiver
from amplint.analysis.scopes import BindingKind, dotted_name

ClipKind = Literal["function", "method", "framework"]

#: torch's clipping functions by qualified name, to their public names. torch 2.6 split
#: ``clip_grad_norm_`` into ``get_total_norm`` and ``clip_grads_with_norm_`` (which
#: ``torch.nn.utils.clip_grad`` holds as ``_get_total_norm`` / ``_clip_grads_with_norm_``).
_CLIP_FUNCTIONS: dict[str, str] = {
    **{
        f"torch.nn.utils.{module}{name}": name
        for module in ("", "clip_grad.")
        for name in ("clip_grad_norm_", "clip_grad_value_", "clip_grad_norm")
    },
    "torch.nn.utils.clip_grads_with_norm_": "clip_grads_with_norm_",
    "torch.nn.utils.clip_grad._clip_grads_with_norm_": "clip_grads_with_norm_",
}
TORCH_CLIP_FUNCTIONS = frozenset(_CLIP_FUNCTIONS)
_TOTAL_NORM_FUNCTIONS = frozenset(
    {"torch.nn.utils.get_total_norm", "torch.nn.utils.clip_grad._get_total_norm"}
)
#: the names clipping goes by, torch's and the frameworks'.
_CLIP_NAMES = frozenset(
    {"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm", "clip_grads", "clip_grads_with_norm_"}
)
_MODEL_NAME = re.compile(r"model|module|net|fsdp", re.IGNORECASE)
_FRAMEWORK_NAME = re.compile(r"accelerat|fabric|engine|trainer|wrapper|strategy", re.IGNORECASE)
_INF_NAMES = frozenset({"inf", "math.inf", "torch.inf", "np.inf", "numpy.inf"})


def clip_kind(model: ModuleModel, call: cst.Call) -> ClipKind | None:
    """``"function"`` for torch's ``clip_grad_norm_``/``clip_grad_value_`` under any alias,
    ``"method"`` for FSDP's ``model.clip_grad_norm_(max_norm)``, ``"framework"`` for the
    clipping of a framework or helper (``accelerator.clip_grad_norm_``, mmengine's
    ``clip_grads``), which unscales first; None for anything else."""
    if model.evaluator.qualified_names(call.func) & TORCH_CLIP_FUNCTIONS:
        return "function"
    name = method_name(call) or (call.func.value if isinstance(call.func, cst.Name) else None)
    if name not in _CLIP_NAMES:
        return None
    if name == "clip_grad_norm_" and model.helper_of(call) is None:
        target = receiver(call)
        owner = dotted_name(target) if target is not None else None
        if owner is not None and _MODEL_NAME.search(owner) and not _FRAMEWORK_NAME.search(owner):
            return "method"
    return "framework"


def clip_function(model: ModuleModel, call: cst.Call) -> str | None:
    """The public name of the torch clipping function ``call`` calls (``clip_grad_norm_``,
    ``clip_grads_with_norm_``, ...), None when it calls none."""
    for name in model.evaluator.qualified_names(call.func):
        public = _CLIP_FUNCTIONS.get(name)
        if public is not None:
            return public
    return None


def norm_source(model: ModuleModel, clip: cst.Call) -> cst.Call | None:
    """The ``get_total_norm(...)`` call whose result ``clip_grads_with_norm_(parameters,
    max_norm, total_norm)`` clips with: given inline, or the one value of a name assigned
    once. None when it is anything else (a norm computed elsewhere, or several)."""
    norm = None
    for arg in clip.args:
        if arg.keyword is not None and arg.keyword.value == "total_norm":
            norm = arg.value
    positional = [a for a in clip.args if a.keyword is None]
    if norm is None and len(positional) > 2 and not any(a.star for a in positional[:3]):
        norm = positional[2].value
    if isinstance(norm, cst.Name):
        bindings = model.index.scope_of(norm).lookup(norm.value)
        if len(bindings) != 1 or bindings[0].kind is not BindingKind.ASSIGN:
            return None
        norm = bindings[0].node  # type: ignore[assignment]
    if isinstance(norm, cst.Call) and model.evaluator.qualified_names(norm.func) & (
        _TOTAL_NORM_FUNCTIONS
    ):
        return norm
    return None


def is_torch_clip(model: ModuleModel, call: cst.Call) -> bool:
    """Torch's own clipping, on the gradients as they are (scaled, if nothing unscaled)."""
    return clip_kind(model, call) in ("function", "method")


def clip_max_norm(call: cst.Call, kind: str) -> cst.BaseExpression | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value in ("max_norm", "clip_value"):
            return arg.value
    positional = [a.value for a in call.args if a.keyword is None and not a.star]
    index = 1 if kind == "function" else 0
    return positional[index] if index < len(positional) else None


def measures_only(model: ModuleModel, call: cst.Call, kind: str) -> bool:
    """``clip_grad_norm_(params, float("inf"))``: computes the norm, clips nothing."""
    value = clip_max_norm(call, kind)
    if value is None:
        return False
    if isinstance(value, cst.Call) and dotted_name(value.func) == "float" and value.args:
        literal = value.args[0].value
        if isinstance(literal, cst.SimpleString) and str(literal.evaluated_value).lower() in (
            "inf",
            "infinity",
        ):
            return True
    return (
        dotted_name(value) in _INF_NAMES if isinstance(value, (cst.Name, cst.Attribute)) else False
    )
