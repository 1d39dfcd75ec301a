"""The one hash amplint uses for contents, cache keys and configuration fingerprints."""

from __future__ import annotations

try:
    # hashlib's own blake2b, without the OpenSSL bindings ``import hashlib`` loads first
    # (5 ms: a tenth of the budget of a re-run answered from the cache).
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b


def hex_digest(data: bytes, size: int = 16) -> str:
    return blake2b(data, digest_size=size).hexdigest()
