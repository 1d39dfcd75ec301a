"""Where a module writes a checkpoint: ``torch.save`` calls, and dicts handed to a saving
helper of the module (``my_save({"optimizer": ...}, path)``). Asked by AMP013 and by the
project summary of what a function saves."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel, calls_in

__all__ = ["dict_handed_to_saving_helper", "is_torch_save"]


def is_torch_save(model: ModuleModel, call: cst.Call) -> bool:
    return bool(call.args) and "torch.save" in model.evaluator.qualified_names(call.func)


def dict_handed_to_saving_helper(model: ModuleModel, call: cst.Call) -> cst.Dict | None:
    """``save_checkpoint({"optimizer": ...}, path)`` where ``save_checkpoint`` is a function
    of this module that passes that parameter, unchanged, to ``torch.save``."""
    helper = model.helper_of(call)
    if helper is None or not any(isinstance(a.value, cst.Dict) for a in call.args):
        return None
    names = [p.name.value for p in (*helper.params.posonly_params, *helper.params.params)]
    if names and names[0] in ("self", "cls") and isinstance(call.func, cst.Attribute):
        names = names[1:]
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
