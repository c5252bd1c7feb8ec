"""Alerts for tests and benchmarks: the package's sample alerts, and filled generated ones.

``lsst.alert.packet.simulate`` leaves every nullable field null and draws values
in [0, 1), so it exercises little of a decoder. :func:`filled_alert` instead
fills *every* field (each union takes its non-null branch) with values of the
right type, and gives the light-curve fields plausible values: it is the
worst case for decoding cost and the best case for field-by-field checks.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import fastavro
import numpy as np

from broker.avro_program import canonical_field
from broker.batch import BANDS
from broker.schemas import AlertSchema, load_local, local_versions, sample_alert_path
from broker.wire import frame, schema_id_for_version


def sample_records() -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(schema_id, record)`` for each package sample alert, every version."""
    for major, minor in local_versions():
        with open(sample_alert_path(major, minor), "rb") as fh:
            for rec in fastavro.reader(fh):
                yield schema_id_for_version(major, minor), rec  # type: ignore[misc]


def encode(schema: AlertSchema, record: dict[str, Any]) -> bytes:
    """Encode ``record`` with fastavro and frame it in the wire format."""
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, schema.parsed, record)
    return frame(schema.schema_id, bio.getvalue())


class _Filler:
    def __init__(self, rng: np.random.Generator, n_array: int, cutout_bytes: int) -> None:
        self.rng, self.n_array, self.cutout = rng, n_array, cutout_bytes
        self.named: dict[str, Any] = {}

    def value(self, t: Any, name: str = "") -> Any:
        rng = self.rng
        if isinstance(t, str) and t in self.named:
            t = self.named[t]
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            return self.value(branches[0], name) if branches else None
        kind = t["type"] if isinstance(t, dict) else t
        if isinstance(t, dict) and kind in ("record", "enum", "fixed"):
            self.named[t["name"]] = t
            self.named[t["name"].rsplit(".", 1)[-1]] = t
        if kind == "record":
            return {f["name"]: self.value(f["type"], f["name"]) for f in t["fields"]}
        if kind == "array":
            return [self.value(t["items"], name) for _ in range(self.n_array)]
        if kind == "map":
            return {"k": self.value(t["values"], name)}
        if kind == "enum":
            return t["symbols"][0]
        if kind == "fixed":
            return b"\x00" * t["size"]
        if isinstance(t, dict) and str(t.get("logicalType", "")).startswith("timestamp"):
            scale = 1000 if "millis" in t["logicalType"] else 1_000_000
            return int(1_780_000_000 * scale + rng.integers(0, 10**6))
        if isinstance(t, dict):
            return self.value(kind, name)
        if kind in ("long", "int"):
            hi = 2**62 if kind == "long" else 2**31 - 1
            return int(rng.integers(0, hi))
        if kind in ("double", "float"):
            return float(np.float32(rng.normal(0.0, 100.0)))
        if kind == "boolean":
            return bool(rng.integers(0, 2))
        if kind == "string":
            return str(rng.choice(list(BANDS))) if canonical_field(name) == "band" else "filled"
        if kind == "bytes":
            return bytes(self.cutout)
        if kind == "null":
            return None
        raise ValueError(f"unsupported type {kind}")


def _fix_photometry(rec: dict[str, Any], mjd: float, rng: np.random.Generator) -> None:
    """Plausible light-curve values in a (diaSource or forced) record, any version's names."""
    for k in list(rec):
        c = canonical_field(k)
        if c == "midpointMjdTai":
            rec[k] = mjd
        elif c == "psfFlux":
            rec[k] = float(np.float32(rng.normal(2000.0, 800.0)))
        elif c == "psfFluxErr":
            rec[k] = float(np.float32(abs(rng.normal(80.0, 10.0)) + 1.0))


def filled_alert(
    schema: AlertSchema | None = None, n_history: int = 100, seed: int = 0, cutout_bytes: int = 0
) -> dict[str, Any]:
    """An alert with every field filled: ``n_history`` prvDiaSources and as many forced sources.

    Parameters
    ----------
    schema : AlertSchema, optional
        Defaults to the package's latest schema.
    n_history : int
        Length of ``prvDiaSources`` and of ``prvDiaForcedSources``.
    seed : int
        Random seed; the same seed gives the same alert.
    cutout_bytes : int
        Size of each cutout blob.
    """
    if schema is None:
        schema = load_local(*local_versions()[-1])
    rng = np.random.default_rng(seed)
    rec = _Filler(rng, n_history, cutout_bytes).value(schema.definition)
    times = np.sort(60000.0 + rng.uniform(0, 365, size=2 * n_history + 1))
    _fix_photometry(rec["diaSource"], float(times[-1]), rng)
    if "diaSourceId" in rec:  # top-level id names the triggering source
        rec["diaSourceId"] = rec["diaSource"]["diaSourceId"]
    for key, ts in (("prvDiaSources", times[:n_history]), ("prvDiaForcedSources", times[n_history:-1])):
        for r, t in zip(rec.get(key) or [], ts, strict=False):
            _fix_photometry(r, float(t), rng)
    return rec  # type: ignore[no-any-return]


def _not_solar_system(rec: dict[str, Any]) -> dict[str, Any]:
    """Clear the solar-system links that :func:`filled_alert` fills (``ssObjectId``, ``ssSource``...)."""
    for src in [rec.get("diaSource") or {}, *(rec.get("prvDiaSources") or [])]:
        if "ssObjectId" in src:
            src["ssObjectId"] = 0  # "no moving object" in every schema version (nullable or not)
    for key in ("ssSource", "ssObject", "mpc_orbits"):
        if rec.get(key) is not None:
            rec[key] = None
    return rec


def stream(n: int, n_history: int = 3, seed: int = 0, schema: AlertSchema | None = None) -> list[bytes]:
    """``n`` wire-format alerts with distinct ``diaSourceId`` = 1..n, for end-to-end tests.

    One filled template is re-encoded with new ids, object ids (n // 3 objects) and times.
    The template is a transient, not a moving object: its solar-system links are cleared.
    """
    if schema is None:
        schema = load_local(*local_versions()[-1])
    base = _not_solar_system(filled_alert(schema, n_history, seed))
    out = []
    for k in range(1, n + 1):
        rec = dict(base)
        src = dict(base["diaSource"])
        for f in ("diaSourceId", "alertId"):
            if f in rec:
                rec[f] = k
        src["diaSourceId"] = k
        for f in ("diaObjectId",):
            if f in src:
                src[f] = 10_000_000 + k % max(1, n // 3)
        if rec.get("diaObject"):
            rec["diaObject"] = dict(rec["diaObject"], diaObjectId=10_000_000 + k % max(1, n // 3))
        mjd_key = next(f for f in src if canonical_field(f) == "midpointMjdTai")
        src[mjd_key] = 61000.0 + k * 1e-4
        rec["diaSource"] = src
        out.append(encode(schema, rec))
    return out
