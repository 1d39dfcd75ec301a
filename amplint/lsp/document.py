"""One version of a document as the client sent it, ready for the engine."""

from __future__ import annotations

import codecs
import io
import tokenize
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from amplint.lsp.convert import split_lines


def uri_to_path(uri: str) -> Path | None:
    """The file system path of a ``file:`` URI; ``None`` for untitled and virtual documents."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = url2pathname(parsed.path)
    if parsed.netloc:
        path = f"//{parsed.netloc}{path}"
    return Path(path)


def _source_encoding(text: str) -> str:
    """The encoding a coding cookie declares, so libcst decodes the bytes we give it as we
    encoded them; positions in a ``latin-1`` file would otherwise shift."""
    head = "\n".join(text.split("\n", 2)[:2]).encode("utf-8", errors="replace")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(head).readline)
        codecs.lookup(encoding)
    except (SyntaxError, LookupError):
        return "utf-8"
    return "utf-8" if encoding == "utf-8-sig" else encoding


@dataclass(frozen=True)
class Snapshot:
    uri: str
    version: int | None
    text: str
    lines: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", split_lines(self.text))

    @cached_property
    def path(self) -> Path | None:
        return uri_to_path(self.uri)

    @property
    def filename(self) -> str:
        return str(self.path) if self.path is not None else self.uri

    @cached_property
    def encoding(self) -> str:
        return _source_encoding(self.text)

    @cached_property
    def data(self) -> bytes:
        try:
            return self.text.encode(self.encoding)
        except UnicodeEncodeError:
            # The cookie lies about the text (the editor decoded it as something else):
            # UTF-8 bytes then give the parse error the user needs to see.
            return self.text.encode("utf-8", errors="surrogatepass")

    def decode(self, data: bytes) -> str:
        """Text of bytes the engine produced from :attr:`data` (a fix-all result)."""
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="replace")
