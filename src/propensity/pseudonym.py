"""Pseudonymous profile ids: lowercase hex of HMAC-SHA256(key, raw id), first 32 characters.

Two implementations that must agree (a test checks it): a Spark column expression built from
`sha2`/`unhex`/`concat` (no Python UDF, so it runs in the JVM at full speed), and pure Python
for other stages (`explain` looks a raw id up with it).
"""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa

ID_CHARS = 32  # hex characters kept: 128 bits
_BLOCK = 64  # SHA-256 block size in bytes (RFC 2104)


def pseudonymise(raw_ids: list[str] | pa.Array | pa.ChunkedArray, key: bytes) -> list[str]:
    """The pseudonymous ids of raw profile ids, in order; None stays None."""
    if isinstance(raw_ids, (pa.Array, pa.ChunkedArray)):
        raw_ids = raw_ids.to_pylist()
    return [
        None
        if raw is None
        else hmac.new(key, raw.encode("utf-8"), hashlib.sha256).hexdigest()[:ID_CHARS]
        for raw in raw_ids
    ]


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def pseudonym_column(raw, key: bytes):
    """Spark column: HMAC-SHA256 composed as sha256(opad || sha256(ipad || msg)).

    The padded key appears as binary literals in the query plan: keep Spark UIs and plan logs
    of production runs as private as the key itself.
    """
    from pyspark.sql import functions as F

    ipad, opad = _pads(key)
    inner = F.unhex(F.sha2(F.concat(F.lit(bytearray(ipad)), F.encode(raw, "UTF-8")), 256))
    outer = F.sha2(F.concat(F.lit(bytearray(opad)), inner), 256)
    return F.substring(outer, 1, ID_CHARS)
