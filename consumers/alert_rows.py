"""Nested Parquet rows <-> Rubin Avro records, and which schema version a Parquet dump holds.

Brokers' data-transfer services dump the nested Rubin record as Parquet (Spark or
pandas). Two quirks of such dumps are undone here, per row:

* Spark writes a missing nested record as a struct whose fields are all null: a
  nullable record whose fields are all null (recursively) becomes null.
* pandas stores an int64 column with nulls as float64, which rounds ids above 2**53
  (169813006680588318 -> 1.6981300668058832e17). A float id is never trusted: it is
  replaced by the exact integer of the same field name found in the same row (the
  top-level fields and the fields of its non-list records, e.g. ``diaSource.diaObjectId``
  for ``diaObject.diaObjectId``) whose float value equals it. Without exactly one such
  copy, only a float that is provably exact (integral, below 2**53, so no rounding can
  have happened) is kept; anything else is an :class:`~broker.errors.InexactId`.
  Other integer fields stored as floats (counts) follow the provably-exact rule.

Columns that no Rubin schema has (a broker's own fields) are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from typing import Any

import pyarrow as pa

from broker.errors import BadAlertRow, InexactId, NotAnAlertDump
from broker.schemas import load_local, local_versions

EXACT_FLOAT = 2.0**53
#: Parquet key-value metadata key naming the Rubin schema id of a dump (written by the exporter).
SCHEMA_ID_KEY = b"alertbroker.schema_id"
#: A per-row column some brokers keep (Fink: ``lsst.v10_0``); used to break ties between versions.
VERSION_COLUMN = "lsst_schema_version"
_INTS = ("int", "long")


def nullable_branch(t: Any) -> tuple[Any, bool]:
    """The non-null branch of ``["null", X]`` and whether null is allowed."""
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return (rest[0] if len(rest) == 1 else rest), len(rest) < len(t)
    return t, False


def resolve_named(t: Any, named: dict[str, Any]) -> Any:
    if isinstance(t, str) and t in named:
        return named[t]
    if isinstance(t, dict) and t.get("type") in ("record", "enum", "fixed"):
        named.setdefault(t["name"], t)
        if "namespace" in t:
            named.setdefault(f"{t['namespace']}.{t['name']}", t)
    return t


def avro_paths(t: Any, named: dict[str, Any] | None = None, pre: str = "") -> set[str]:
    """Dotted field paths of an Avro type (array items share their array's path)."""
    named = {} if named is None else named
    t = resolve_named(nullable_branch(t)[0], named)
    out: set[str] = set()
    if isinstance(t, dict) and t.get("type") == "record":
        for f in t["fields"]:
            out.add(pre + f["name"])
            out |= avro_paths(f["type"], named, pre + f["name"] + ".")
    elif isinstance(t, dict) and t.get("type") == "array":
        out |= avro_paths(t["items"], named, pre)
    return out


def arrow_paths(t: pa.DataType, pre: str = "") -> tuple[set[str], set[str]]:
    """Dotted paths of an Arrow type, and the paths typed ``null`` (all-null pandas columns)."""
    out: set[str] = set()
    nulls: set[str] = set()
    while pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    if pa.types.is_struct(t):
        for f in t:
            out.add(pre + f.name)
            inner = f.type
            while pa.types.is_list(inner) or pa.types.is_large_list(inner):
                inner = inner.value_type
            if pa.types.is_null(inner):
                nulls.add(pre + f.name)
            o, n = arrow_paths(f.type, pre + f.name + ".")
            out |= o
            nulls |= n
    return out, nulls


@cache
def _schema_paths() -> dict[int, frozenset[str]]:
    return {load_local(*v).schema_id: frozenset(avro_paths(load_local(*v).definition)) for v in local_versions()}


@lru_cache(maxsize=64)
def _tied(schema: pa.Schema) -> list[int]:
    """The matching schema ids with the most paths (see :func:`infer_schema_id`); cached: folders repeat a schema."""
    got, nulls = arrow_paths(pa.struct(list(schema)))

    def under_null(path: str) -> bool:  # some n in nulls with path.startswith(n + "."), by prefix lookup
        parts = path.split(".")
        return any(".".join(parts[:k]) in nulls for k in range(1, len(parts)))

    def missing(paths: frozenset[str]) -> list[str]:
        return sorted(p for p in paths - got if not under_null(p))

    table = _schema_paths()
    matches = [sid for sid, paths in table.items() if not missing(paths)]
    if not matches:
        best = min(table, key=lambda s: (len(missing(table[s])), -s))
        miss = missing(table[best])
        raise NotAnAlertDump(f"columns match no Rubin schema; closest {best // 100}.{best % 100} lacks "
                             f"{len(miss)} fields ({', '.join(miss[:4])})")  # fmt: skip
    most = max(len(table[s]) for s in matches)
    tied = sorted(s for s in matches if len(table[s]) == most)
    return tied


def infer_schema_id(schema: pa.Schema, version_values: Iterable[str] = ()) -> int:
    """The Rubin schema id whose field set a Parquet dump's columns match.

    A shipped schema matches when every one of its field paths is a column path of
    the file (paths under an all-null, ``null``-typed column count as present; extra
    columns are ignored). Among matches the one with the most paths wins (11.1's
    fields include 11.0's). A tie (10.0 and 11.0 differ only in nullability) is
    broken by a ``lsst_schema_version`` value (``lsst.v10_0``) when the file has
    one, else the oldest tied version is taken: it is the most permissive.

    Raises
    ------
    NotAnAlertDump
        When no shipped schema matches; the detail names the closest one.
    """
    tied = _tied(schema)
    found = (re.fullmatch(r"lsst\.v(\d+)_(\d+)", v) for v in version_values if isinstance(v, str))
    named = {int(m.group(1)) * 100 + int(m.group(2)) for m in found if m}
    hinted = [s for s in tied if s in named]
    return hinted[0] if len(hinted) == 1 else tied[0]


def exact_ints(row: dict[str, Any]) -> dict[str, set[int]]:
    """Exact integers of a row by field name: top-level fields and fields of its (non-list) records."""
    out: dict[str, set[int]] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, int) and not isinstance(v2, bool):
                    out.setdefault(k2, set()).add(v2)
        elif isinstance(v, int) and not isinstance(v, bool):
            out.setdefault(k, set()).add(v)
    return out


def _all_null(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and all(_all_null(x) for x in v.values()))


def _int(v: float, name: str, path: str, exact: dict[str, set[int]]) -> int:
    if name.endswith("Id") or name.endswith("ID"):
        same = {c for c in exact.get(name, ()) if float(c) == v}
        if len(same) == 1:
            return same.pop()
        if v == v and abs(v) < EXACT_FLOAT and v == int(v):
            return int(v)
        raise InexactId(f"{path} = {v!r} is a float id with {'several' if same else 'no'} exact copy in the row")
    if v == v and abs(v) < EXACT_FLOAT and v == int(v):
        return int(v)
    raise BadAlertRow(f"{path} = {v!r}: not an exact integer")


Conv = Callable[[Any, dict[str, set[int]]], Any]


def converter(t: Any, named: dict[str, Any], path: str = "", name: str = "") -> Conv | None:
    """A function turning one Parquet value (``to_pylist`` form) into the Avro value of type ``t``.

    Built once per schema: None means "no conversion needed" (strings, floats,
    bytes, booleans pass as they are; fastavro rejects a wrong type or a null).
    The function takes the value and the row's :func:`exact_ints`.
    """
    t, nullable = nullable_branch(t)
    t = resolve_named(t, named)
    kind = t.get("type") if isinstance(t, dict) else t
    where = path or "record"
    if kind == "record":
        fields = [(f["name"], converter(f["type"], named, f"{path}.{f['name']}".lstrip("."), f["name"]),
                   "default" in f, f.get("default")) for f in t["fields"]]  # fmt: skip

        def record(v: Any, exact: dict[str, set[int]]) -> Any:
            if v is None or (nullable and _all_null(v)):
                if nullable:
                    return None
                raise BadAlertRow(f"{where}: null where the schema requires a record")
            if not isinstance(v, dict):
                raise BadAlertRow(f"{where}: expected a record, got {type(v).__name__}")
            out = {}
            for fname, conv, has_default, default in fields:
                if fname not in v and has_default:
                    out[fname] = default
                else:
                    fv = v.get(fname)
                    out[fname] = fv if conv is None else conv(fv, exact)
            return out

        return record
    if kind == "array":
        item = converter(t["items"], named, path, name)

        def array(v: Any, exact: dict[str, set[int]]) -> Any:
            if v is None:
                return None if nullable else []  # pandas/Spark write an empty required list as null
            if not isinstance(v, list):
                raise BadAlertRow(f"{where}: expected a list, got {type(v).__name__}")
            return v if item is None else [item(x, exact) for x in v]

        return array
    if kind in _INTS:

        def integer(v: Any, exact: dict[str, set[int]]) -> Any:
            return _int(v, name, where, exact) if isinstance(v, float) else v

        return integer
    return None


@cache
def _compiled(definition_json: str) -> Conv:
    conv = converter(json.loads(definition_json), {})
    assert conv is not None
    return conv


_BY_OBJECT: dict[int, tuple[dict[str, Any], Conv]] = {}


def record_converter(definition: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """Row -> Avro record of schema ``definition`` (build once per file; see :func:`converter`).

    The returned function raises :class:`InexactId` or :class:`BadAlertRow` for a row that cannot be converted.
    """
    held = _BY_OBJECT.get(id(definition))
    if held is not None and held[0] is definition:  # the same dict again (a SchemaStore's): no JSON dump
        conv = held[1]
    else:
        conv = _compiled(json.dumps(definition, sort_keys=True))
        if len(_BY_OBJECT) >= 64:
            _BY_OBJECT.clear()
        _BY_OBJECT[id(definition)] = (definition, conv)  # holding the dict keeps its id from being reused
    return lambda row: conv(row, exact_ints(row))
