"""Test helper: write enriched wire-format messages as the Avro container files a file sink writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from broker.container_writer import ContainerWriter
from broker.schemas import SchemaStore
from broker.wire import HEADER_SIZE, parse_header


def write_containers(values: Sequence[bytes], d: Path) -> Path:
    """One ``enriched-<schema id>.avro`` container per schema id of ``values`` in folder ``d``."""
    store = SchemaStore()
    for sid in sorted({parse_header(v) for v in values}):
        w = ContainerWriter(d / f"enriched-{sid}.avro", store.get(sid).definition)
        w.write_block([v[HEADER_SIZE:] for v in values if parse_header(v) == sid])
        w.close()
    return d
