"""``python -m amplint.lsp``: the language server without going through the CLI."""

from amplint.lsp.server import serve

if __name__ == "__main__":
    serve()
