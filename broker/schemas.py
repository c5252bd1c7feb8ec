"""Rubin alert schemas, read from the installed ``lsst-alert-packet`` package.

Nothing is copied into this repository: every ``major/minor`` folder that the
package ships (3.0 .. 11.1) is discovered at run time. A schema id that no
local schema knows can be resolved through a caller-supplied ``resolver`` (the
Kafka layer plugs in a Confluent Schema Registry client); ids never change, so
whatever is resolved is cached forever.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from broker.annotations import (
    ENRICHED_ID_BASE,
    KNOWN_MAJORS,
    SCORES_SCHEMA,
    SCORES_SCHEMA_ID,
    annotations_major,
    enriched_definition,
    enriched_schema_id,
)
from broker.errors import UnknownSchema
from broker.wire import schema_id_for_version, version_for_schema_id

#: Resolver for ids that no local schema knows: returns the schema JSON text, or
#: None when the id is unknown there too.
Resolver = Callable[[int], "str | None"]


@dataclass(frozen=True)
class AlertSchema:
    """One alert schema.

    Attributes
    ----------
    schema_id : int
        Wire-format id (``major*100 + minor`` for Rubin schemas).
    definition : dict
        Fully expanded Avro schema (a JSON-compatible dict).
    parsed : Any
        The same, parsed by fastavro (for the single-alert reference path).
    """

    schema_id: int
    definition: dict[str, Any]
    parsed: Any = field(repr=False, compare=False)

    @property
    def version(self) -> str:
        """``"major.minor"`` for Rubin ids, else the id as a string."""
        major, minor = version_for_schema_id(self.schema_id)
        return f"{major}.{minor}"

    @classmethod
    def from_definition(cls, schema_id: int, definition: dict[str, Any]) -> AlertSchema:
        """Build from an Avro definition; fastavro parsing validates it."""
        parsed = fastavro.parse_schema(definition, _write_hint=False, _force=True)
        return cls(schema_id=schema_id, definition=definition, parsed=parsed)


def schema_root() -> Path:
    """Folder of the ``lsst-alert-packet`` schemas (``<major>/<minor>/*.avsc``)."""
    from lsst.alert.packet import get_schema_root

    return Path(get_schema_root())


def local_versions() -> list[tuple[int, int]]:
    """Every ``(major, minor)`` that the installed package ships, ascending."""
    out = []
    for major_dir in schema_root().iterdir():
        if not major_dir.name.isdigit():
            continue
        for minor_dir in major_dir.iterdir():
            if minor_dir.name.isdigit() and any(minor_dir.glob("*.alert.avsc")):
                out.append((int(major_dir.name), int(minor_dir.name)))
    return sorted(out)


def latest_version() -> tuple[int, int]:
    """The package's ``latest.txt`` version, e.g. ``(11, 1)``."""
    text = (schema_root() / "latest.txt").read_text().strip()
    major, minor = text.split(".")
    return int(major), int(minor)


def sample_alert_path(major: int, minor: int) -> Path:
    """The package's ``sample_data/fakeAlert.avro`` (an Avro container of one alert)."""
    return schema_root() / str(major) / str(minor) / "sample_data" / "fakeAlert.avro"


@cache
def load_local(major: int, minor: int) -> AlertSchema:
    """Load and expand the alert schema ``major.minor`` from the package."""
    from lsst.alert.packet import Schema

    path = schema_root() / str(major) / str(minor) / f"lsst.v{major}_{minor}.alert.avsc"
    definition = Schema.from_file(str(path)).definition
    # Round-trip through JSON: drops fastavro's private keys and gives a plain dict.
    clean = json.loads(json.dumps(definition, default=str))
    return AlertSchema.from_definition(schema_id_for_version(major, minor), clean)


def _fingerprint(definition: dict[str, Any]) -> str:
    """CRC-64-AVRO fingerprint of the Parsing Canonical Form."""
    parsed = fastavro.parse_schema(definition, _write_hint=False, _force=True)
    return str(fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class SchemaStore:
    """Schema id -> :class:`AlertSchema`, local first, then the resolver, cached.

    Parameters
    ----------
    resolver : callable, optional
        Called with an id that no local schema knows; returns the schema text
        or None. May raise :class:`broker.errors.RegistryUnavailable`.
    """

    def __init__(self, resolver: Resolver | None = None) -> None:
        self._local = {schema_id_for_version(*v): v for v in local_versions()}
        self._cache: dict[int, AlertSchema] = {}
        self._unknown: set[int] = set()
        self._resolver = resolver
        self._lock = threading.Lock()
        self._fingerprints: dict[str, int] = {}

    def known_ids(self) -> list[int]:
        """Ids available without a registry."""
        return sorted(self._local)

    def register(self, schema_id: int, definition: dict[str, Any] | str) -> AlertSchema:
        """Add a schema under ``schema_id`` (e.g. one read from a container header)."""
        if isinstance(definition, str):
            definition = json.loads(definition)
        assert isinstance(definition, dict)
        schema = AlertSchema.from_definition(schema_id, definition)
        with self._lock:
            self._cache[schema_id] = schema
            self._unknown.discard(schema_id)
        return schema

    def identify(self, definition: dict[str, Any] | str) -> int:
        """Schema id of a definition found in a file header (Avro container, archive).

        Matches the Parsing Canonical Form against the local Rubin schemas and
        their enriched forms; an unknown schema is registered under a stable
        synthetic id in ``[2**30, 2**31)`` derived from its fingerprint.
        """
        if isinstance(definition, str):
            definition = json.loads(definition)
        assert isinstance(definition, dict)
        fp = _fingerprint(definition)
        if not self._fingerprints:
            for known in self.known_ids():
                plain = self.get(known).definition
                self._fingerprints[_fingerprint(plain)] = known
                for major in KNOWN_MAJORS:  # our own enriched containers, of every annotations version
                    fp_e = _fingerprint(enriched_definition(plain, major))
                    self._fingerprints[fp_e] = enriched_schema_id(known, major)
            self._fingerprints[_fingerprint(SCORES_SCHEMA)] = SCORES_SCHEMA_ID
        found = self._fingerprints.get(fp)
        if found is None:
            found = (int(fp, 16) & 0x3FFFFFFF) | 0x40000000
            self.register(found, definition)
            self._fingerprints[fp] = found
        return found

    def get(self, schema_id: int) -> AlertSchema:
        """Return the schema for ``schema_id``.

        Raises
        ------
        UnknownSchema
            When neither the package nor the resolver knows the id.
        """
        hit = self._cache.get(schema_id)
        if hit is not None:
            return hit
        if schema_id in self._local:
            schema = load_local(*self._local[schema_id])
            self._cache[schema_id] = schema
            return schema
        if schema_id == SCORES_SCHEMA_ID:
            return self.register(schema_id, copy.deepcopy(SCORES_SCHEMA))
        major = annotations_major(schema_id)
        if major is not None:  # an enriched schema (any known version): derive it from its input
            base = self.get(schema_id % ENRICHED_ID_BASE).definition
            return self.register(schema_id, enriched_definition(base, major))
        if self._resolver is not None and schema_id not in self._unknown:
            text = self._resolver(schema_id)
            if text is not None:
                return self.register(schema_id, text)
            self._unknown.add(schema_id)
        raise UnknownSchema(f"schema id {schema_id} is not known locally or to the registry")
