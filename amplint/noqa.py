"""``# noqa`` and ``# noqa: AMP001, AMP002`` comments, read from real comment tokens."""

from __future__ import annotations

import io
import re
import tokenize

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.I)

#: Stands for "every code" on a line with a bare ``# noqa``.
ALL = "*"


def noqa_lines(text: str) -> dict[int, frozenset[str]]:
    """Map 1-based rows to the codes silenced there (``{"*"}`` for a bare noqa)."""
    silenced: dict[int, frozenset[str]] = {}
    if "noqa" not in text.lower():
        return silenced
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return silenced
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        match = _NOQA.search(token.string)
        if match is None:
            continue
        codes = match.group("codes")
        if codes:
            silenced[token.start[0]] = frozenset(c.upper() for c in re.split(r"[,\s]+", codes))
        else:
            silenced[token.start[0]] = frozenset({ALL})
    return silenced


def is_silenced(silenced: dict[int, frozenset[str]], row: int, code: str) -> bool:
    codes = silenced.get(row)
    return codes is not None and (ALL in codes or code in codes)
