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
    # Streamed, not listed: a large file's tokens would cost more memory than its findings.
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type != tokenize.COMMENT:
                continue
            match = _NOQA.search(token.string)
            if match is None:
                continue
            codes = match.group("codes")
            if codes:
                found = frozenset(c.upper() for c in re.split(r"[,\s]+", codes))
            else:
                found = frozenset({ALL})
            silenced[token.start[0]] = found
    except (tokenize.TokenError, SyntaxError):
        return {}
    return silenced


def is_silenced(silenced: dict[int, frozenset[str]], row: int, code: str) -> bool:
    codes = silenced.get(row)
    return codes is not None and (ALL in codes or code in codes)
