"""Named failures. Every way an alert can fail has one class and one DLQ reason.

The reason string is what lands in the dead-letter record (header ``reason``) and
in the ``alerts_dlq_total{reason=...}`` metric, so it is part of the public
contract: never rename one.
"""

from __future__ import annotations


class AlertError(Exception):
    """Base class: an alert (or message) that cannot be processed.

    Attributes
    ----------
    reason : str
        Stable, machine-readable DLQ reason.
    """

    reason = "error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason


class EmptyMessage(AlertError):
    """The message has no value (tombstone or zero-length payload)."""

    reason = "empty_message"


class BadMagicByte(AlertError):
    """The first byte is not the Confluent wire-format magic byte 0."""

    reason = "bad_magic_byte"


class TruncatedHeader(AlertError):
    """The message is shorter than the 5-byte wire-format header."""

    reason = "truncated_header"


class UnknownSchema(AlertError):
    """No local schema and no registry knows this schema id."""

    reason = "unknown_schema"


class MalformedBody(AlertError):
    """The Avro body does not decode against its schema (garbage, truncation, bad union)."""

    reason = "malformed_body"


class HistoryTooLarge(AlertError):
    """More history rows than ``max_history_rows`` allows."""

    reason = "history_too_large"


class CorruptArchive(AlertError):
    """An archive (tar, gzip, Avro container) or one of its members is unreadable."""

    reason = "corrupt_archive"


class MessageTooLarge(AlertError):
    """The message (or the enriched output made from it) is larger than ``max_message_bytes``.

    The dead letter carries the original payload, or a truncated copy when even the
    dead-letter topic could not take it (header ``payload_truncated`` and ``payload_size``).
    """

    reason = "message_too_large"


class DecompressionBomb(AlertError):
    """A compressed archive member or container block expands past ``max_expanded_bytes``."""

    reason = "decompression_bomb"


class AlreadyEnriched(AlertError):
    """The message is one of our own outputs (an enriched alert or a scores record) fed back as input."""

    reason = "already_enriched"


class NotAnAlert(AlertError):
    """A file in an archive folder is neither a wire-format message nor an Avro container."""

    reason = "not_an_alert"


class CorruptParquet(AlertError):
    """A Parquet file (a dump, a HATS partition) or one of its row groups is unreadable (truncated, garbage)."""

    reason = "corrupt_parquet"


class NotAnAlertDump(AlertError):
    """A readable Parquet file whose columns match no Rubin alert schema."""

    reason = "not_an_alert_dump"


class InexactId(AlertError):
    """A 64-bit id stored only as a float (rounded) with no exact integer copy in the same row."""

    reason = "inexact_id"


class BadAlertRow(AlertError):
    """A Parquet row that does not fit its Rubin schema (a required field null or of the wrong type)."""

    reason = "bad_alert_row"


class CutoutUnreadable(AlertError):
    """A cutout stamp is not a readable FITS image (the alert is still enriched, without images)."""

    reason = "cutout_unreadable"


class EnrichmentFailed(AlertError):
    """Featurizing or scoring raised for this alert."""

    reason = "enrichment_failed"


class RegistryUnavailable(Exception):
    """The schema registry could not be reached (transient: do not dead-letter, retry)."""


class DeliveryFailed(Exception):
    """An output or DLQ record was not delivered. The worker stops without committing."""


ALL_REASONS: tuple[str, ...] = tuple(
    c.reason
    for c in (
        EmptyMessage,
        BadMagicByte,
        TruncatedHeader,
        UnknownSchema,
        MalformedBody,
        HistoryTooLarge,
        CorruptArchive,
        MessageTooLarge,
        DecompressionBomb,
        AlreadyEnriched,
        NotAnAlert,
        CorruptParquet,
        NotAnAlertDump,
        InexactId,
        BadAlertRow,
        EnrichmentFailed,
    )
)
