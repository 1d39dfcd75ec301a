"""Semantic analysis of one module: scopes, names, AMP values and training-step structure.

Rules never walk raw syntax to answer "is this torch's autocast?" or "is this a scaler?":
they ask the :class:`~amplint.analysis.model.ModuleModel`, so every rule gets the same
answer on every idiom (aliases, partials, attributes, helpers).
"""
