"""The predictions contract's side file, read alike by scoring, monitoring and the daily cycle.

`predictions/dt=D/_manifest.json` (rows, model, input, shards, timing, stats). Partitions scored
before side files took a `_` hold `manifest.json` instead; readers accept either.
"""

from __future__ import annotations

from typing import Any

from propensity import storage

MANIFEST = "_manifest.json"
LEGACY_MANIFEST = "manifest.json"


def manifest_uri(partition: str) -> str | None:
    """The manifest of a predictions partition (the legacy name where only it exists), or None."""
    for name in (MANIFEST, LEGACY_MANIFEST):
        uri = storage.join(partition, name)
        if storage.exists(uri):
            return uri
    return None


def read_manifest(partition: str) -> dict[str, Any]:
    """The manifest of a complete predictions partition; StorageError naming it when absent."""
    return storage.read_json(manifest_uri(partition) or storage.join(partition, MANIFEST))
