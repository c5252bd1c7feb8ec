"""``alertbroker inspect``: one JSON line per alert (ids as strings: JavaScript loses 64-bit digits)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from broker.annotations import SCORES_SCHEMA_ID, base_schema_id
from broker.decode import BatchDecoder
from broker.decode_ref import read_message
from broker.errors import AlertError
from broker.schemas import SchemaStore
from broker.settings import Settings
from broker.wire import version_for_schema_id
from consumers.archive import iter_archive
from consumers.uri import KafkaURI, parse_uri


def describe(value: bytes | AlertError | None, store: SchemaStore) -> dict[str, Any]:
    """Summary of one wire-format message, or of the error an archive reader already named for it."""
    if isinstance(value, AlertError):  # re-parsing a broken archive piece would misname its error
        return {"error": value.reason, "detail": value.detail}
    try:
        sid, rec = read_message(value or b"", store)
    except AlertError as e:
        return {"error": e.reason, "detail": e.detail}
    if sid == SCORES_SCHEMA_ID:  # a compact scores record
        return {k: str(v) if k.endswith("Id") and v is not None else v for k, v in rec.items()}
    base = base_schema_id(sid) or sid
    src = rec.get("diaSource") or {}
    obj = rec.get("diaObject") or {}
    ann = rec.get("annotations")
    obj_id = src.get("diaObjectId") if src.get("diaObjectId") is not None else obj.get("diaObjectId")
    out: dict[str, Any] = {
        "diaSourceId": str(rec.get("diaSourceId", src.get("diaSourceId"))),
        "diaObjectId": None if obj_id is None else str(obj_id),
        "schema": "{}.{}".format(*version_for_schema_id(base)),
        "enriched": ann is not None or base != sid,
        "nDetections": 1 + len(rec.get("prvDiaSources") or []),
        "nForced": len(rec.get("prvDiaForcedSources") or []),
    }
    if ann is not None:
        out["annotations"] = ann
    return out


def iter_values(target: str, store: SchemaStore, limit: int | None, timeout: float,
                settings: Settings | None = None) -> Iterator[bytes | AlertError | None]:  # fmt: skip
    """Message values from a path or a ``kafka://`` URI (read from the beginning, own group).

    ``settings`` (default: from the environment) give the Kafka security settings.
    """
    parsed = parse_uri(target)
    if not isinstance(parsed, KafkaURI):
        cap = settings.max_expanded_bytes if settings is not None else None
        for m in iter_archive(parsed.path, BatchDecoder(store), max_expanded_bytes=cap):
            # a piece the archive reader could not use comes as its own error, as `run` names it
            yield m.error if m.error is not None else m.value
        return
    from consumers.kafka_clients import fresh_group, make_consumer

    settings = settings or Settings.load()
    c = make_consumer(settings, parsed, defaults={"group.id": fresh_group(settings, "inspect"),
                                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([parsed.topic])
    n, last = 0, time.monotonic()
    try:
        while time.monotonic() - last < timeout and (limit is None or n < limit):
            km = c.poll(0.5)
            if km is None or km.error():
                continue
            last = time.monotonic()
            n += 1
            yield km.value()
    finally:
        c.close()


def inspect(target: str, store: SchemaStore, limit: int | None = None, timeout: float = 5.0,
            settings: Settings | None = None) -> Iterator[str]:  # fmt: skip
    """JSON lines describing the alerts at ``target`` (``settings``: Kafka security, default from the environment)."""
    for k, v in enumerate(iter_values(target, store, limit, timeout, settings)):
        if limit is not None and k >= limit:
            return
        yield json.dumps(describe(v, store), default=str)
