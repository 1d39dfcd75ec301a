"""Where a module writes a checkpoint: ``torch.save`` calls, and dicts handed to a saving
helper of the module (``my_save({"optimizer": ...}, path)``). Asked by AMP013 and by the
project summary of what a function saves."""

from __future__ import annotations

import re
from collections.abc import Sequence

import libcst as cst

from amplint.analysis.model import ModuleModel, calls_in, parameters_as_called, walk_body
from amplint.analysis.values import ImportedValue

__all__ = [
    "dict_handed_to_saving_helper",
    "forwards_first_argument_to_save",
    "is_torch_save",
    "mentions_scaler",
]

#: Checkpoint keys that hold AMP state under another name (timm: "amp_scaler"; apex: "amp").
_SCALER_KEY = re.compile(r"scaler|(^|_)amp($|_)", re.IGNORECASE)


def is_torch_save(model: ModuleModel, call: cst.Call) -> bool:
    """``torch.save(obj, path)``, or a call of a function that hands its first argument on
    to ``torch.save`` unchanged: ``save_on_master(checkpoint, path)`` (torchvision's
    references, DETR, DeiT), defined in this module or, through its summary, in another
    module of the project. Either way the call's first argument is what lands on disk."""
    if not call.args:
        return False
    if "torch.save" in model.evaluator.qualified_names(call.func):
        return True
    first = call.args[0]
    if first.keyword is not None or first.star:
        return False
    helper = model.helper_of(call)
    if helper is not None:
        return forwards_first_argument_to_save(model, helper, parameters_as_called(call, helper))
    if model.imports is None or not isinstance(call.func, (cst.Name, cst.Attribute)):
        return False
    callees = model.evaluator.evaluate(call.func)
    return len(callees) == 1 and any(
        isinstance(callee, ImportedValue) and callee.saves_first_argument() for callee in callees
    )


def forwards_first_argument_to_save(
    model: ModuleModel, function: cst.FunctionDef, params: Sequence[str] | None = None
) -> bool:
    """Whether ``function`` hands the first argument its callers pass to a save, unchanged:
    as the first of ``params`` (its positional parameters as called, ``self`` left out
    where bound; all of them by default), never rebound, or as the first of ``*args``
    where ``*args`` comes first (``torch.save(*args, **kwargs)``)."""
    if params is None:
        params = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
    memo = model.forwards_to_save_memo
    key = (function, len(params))
    if key in memo:
        return memo[key]
    memo[key] = False  # recursion guard, and the answer for every early return below
    star = function.params.star_arg
    if params:
        name, starred = params[0], False
    elif isinstance(star, cst.Param):
        name, starred = star.name.value, True
    else:
        return False
    scope = model.index.functions.get(function)
    if scope is None or len(scope.bindings.get(name, [])) != 1:
        return False  # rebound (filtered, extended) inside: not the caller's object
    if mentions_scaler(function.body):
        return False  # it may add a scaler's state to what it is given before saving
    found = False
    for save in calls_in(function.body):
        if not save.args or model.is_dead(save):
            continue
        first = save.args[0]
        handed = (
            isinstance(first.value, cst.Name)
            and first.value.value == name
            and first.keyword is None
            and (first.star == "*") == starred
        )
        if handed and (
            "torch.save" in model.evaluator.qualified_names(save.func)
            or (not starred and is_torch_save(model, save))
        ):
            found = True
            break
    memo[key] = found
    return found


def dict_handed_to_saving_helper(model: ModuleModel, call: cst.Call) -> cst.Dict | None:
    """``save_checkpoint({"optimizer": ...}, path)`` where ``save_checkpoint`` is a function
    of this module that passes that parameter, unchanged, to ``torch.save``."""
    helper = model.helper_of(call)
    if helper is None or not any(isinstance(a.value, cst.Dict) for a in call.args):
        return None
    names = parameters_as_called(call, helper)
    scope = model.index.functions[helper]
    for save in calls_in(helper.body):
        if not is_torch_save(model, save) or model.is_dead(save):
            continue
        saved = save.args[0].value
        if not isinstance(saved, cst.Name) or len(scope.bindings.get(saved.value, [])) != 1:
            continue  # rebound (filtered, extended) inside the helper: not the caller's dict
        for position, arg in enumerate(call.args):
            if arg.star:
                break
            keyword = arg.keyword.value if arg.keyword is not None else None
            name = keyword or (names[position] if position < len(names) else None)
            if name == saved.value and isinstance(arg.value, cst.Dict):
                return arg.value
    return None


def mentions_scaler(node: cst.CSTNode) -> bool:
    """Whether a name, attribute or string key under ``node`` speaks of a scaler (a helper
    that does may save or restore one's state)."""
    for current in walk_body(node):
        if isinstance(current, cst.Name) and "scaler" in current.value.lower():
            return True
        if isinstance(current, cst.SimpleString) and _SCALER_KEY.search(
            str(current.evaluated_value)
        ):
            return True
    return False
