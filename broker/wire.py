"""Confluent wire format: magic byte ``0x00`` + big-endian int32 schema id + Avro body.

Rubin's schema id is ``major * 100 + minor`` (v9.0 -> 900, v11.1 -> 1101). The id is
big-endian, as in the Confluent specification and BOOM's decoder (one Rubin
document says little-endian; the sample data and registry follow Confluent).
"""

from __future__ import annotations

import struct

from broker.errors import BadMagicByte, EmptyMessage, TruncatedHeader

MAGIC = 0
HEADER_SIZE = 5
_HEADER = struct.Struct(">bI")


def schema_id_for_version(major: int, minor: int) -> int:
    """Rubin registry id of schema ``major.minor`` (``11, 1 -> 1101``)."""
    return major * 100 + minor


def version_for_schema_id(schema_id: int) -> tuple[int, int]:
    """Inverse of :func:`schema_id_for_version` (``1101 -> (11, 1)``)."""
    return divmod(schema_id, 100)


def parse_header(message: bytes | bytearray | memoryview | None) -> int:
    """Return the schema id of a wire-format message.

    The body is ``message[HEADER_SIZE:]``; callers index into the original
    buffer rather than slicing it, because slicing a 100 KiB payload copies it.

    Raises
    ------
    EmptyMessage, TruncatedHeader, BadMagicByte
        When the message is not in Confluent wire format.
    """
    if message is None or len(message) == 0:
        raise EmptyMessage("message has no value")
    if len(message) < HEADER_SIZE:
        raise TruncatedHeader(f"{len(message)} bytes, need at least {HEADER_SIZE}")
    if message[0] != MAGIC:
        raise BadMagicByte(f"first byte is 0x{message[0]:02x}, expected 0x00")
    return int(_HEADER.unpack_from(message, 0)[1])


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the wire-format header."""
    return _HEADER.pack(MAGIC, schema_id) + body
