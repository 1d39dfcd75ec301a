"""amplint's language server (``amplint server``); needs the ``lsp`` extra (pygls)."""

from __future__ import annotations


def serve() -> None:
    """Run the language server over stdio (imported lazily: pygls is an optional extra)."""
    from amplint.lsp.server import serve as _serve

    _serve()


__all__ = ["serve"]
