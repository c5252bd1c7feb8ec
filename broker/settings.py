"""Typed settings: defaults < TOML file < environment (``ALERTBROKER__SECTION__KEY``).

Secrets are ``SecretStr``: they print as ``**********`` in logs and reprs.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.tokens import LC_MAX_TOKENS


class ConfigError(Exception):
    """The configuration (TOML file, environment or overrides) cannot be read or is invalid."""


class KafkaSettings(BaseModel):
    """librdkafka settings shared by consumers and producers.

    Rubin's stream needs ``security_protocol="SASL_SSL"`` (or ``SASL_PLAINTEXT``),
    ``sasl_mechanism="SCRAM-SHA-512"`` and a group id that starts with the
    username. Anything else librdkafka accepts goes in ``extra``.
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "alertbroker"
    auto_offset_reset: str = "earliest"
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    session_timeout_ms: int = 45_000
    partition_assignment_strategy: str = "cooperative-sticky"
    group_protocol: str = Field(default="classic", description="'classic' or 'consumer' (KIP-848)")
    group_instance_id: str | None = Field(
        default=None, description="static membership: a restarted worker gets its partitions back at once")
    extra: dict[str, str] = Field(default_factory=dict)

    def consumer_group(self) -> dict[str, Any]:
        """Consumer-group settings. With KIP-848 (``group_protocol="consumer"``) the broker assigns
        partitions and owns the session timeout, so those client settings are left out."""
        conf: dict[str, Any] = {"group.id": self.group_id, "auto.offset.reset": self.auto_offset_reset}
        if self.group_protocol == "consumer":
            conf["group.protocol"] = "consumer"
        else:
            conf["session.timeout.ms"] = self.session_timeout_ms
            conf["partition.assignment.strategy"] = self.partition_assignment_strategy
        if self.group_instance_id:
            conf["group.instance.id"] = self.group_instance_id
        return conf

    def librdkafka(self) -> dict[str, Any]:
        """Common client config (secrets revealed: pass to the client, never log it)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for key, val in (
            ("security.protocol", self.security_protocol),
            ("sasl.mechanism", self.sasl_mechanism),
            ("sasl.username", self.sasl_username),
            ("sasl.password", self.sasl_password.get_secret_value() if self.sasl_password else None),
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if val is not None:
                conf[key] = val
        conf.update(self.extra)
        return conf


class RegistrySettings(BaseModel):
    """Confluent-compatible Schema Registry, consulted for schema ids not shipped locally."""

    url: str | None = None
    basic_auth_user_info: SecretStr | None = None


class Settings(BaseSettings):
    """All settings of a worker."""

    model_config = SettingsConfigDict(env_prefix="ALERTBROKER__", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    broker_name: str = "alertbroker"
    batch_size: int = Field(
        default=100, ge=1,
        description="most alerts per micro-batch. Every alert of a batch waits for the whole batch, so a "
                    "backlog of deep-drilling alerts (~1,200 history rows, ~3 ms each) in batches of 500 "
                    "held its first alerts ~1.5 s; 100 keeps paced p99 under 1 s at 450 alerts/s and "
                    "loses no throughput (docs/scaling.md, 'Batch size')")  # fmt: skip
    batch_timeout_s: float = Field(default=0.5, gt=0, description="longest wait for a message before an empty poll")
    batch_linger_s: float = Field(
        default=0.02, gt=0,
        description="a batch closes this long after its first poll slice brought a message (or sooner, when full): "
                    "a trickle is not held for batch_timeout_s, a backlog still fills whole batches")  # fmt: skip
    max_inflight_batches: int = 4
    max_history_rows: int = 20_000
    lc_tokens: int = Field(
        default=LC_MAX_TOKENS, ge=1, le=LC_MAX_TOKENS,
        description="light-curve tokens per alert given to the model (past it: the most recent half and the "
                    "most significant older points), at most the LC_MAX_TOKENS models are trained with; fewer "
                    "is faster (docs/models.md, 'Token budget')")  # fmt: skip
    fit_cache_size: int = Field(
        default=200_000, ge=0,
        description="per-band Bazin fits remembered (LRU, ~0.35 KB each, ~70 MB at the default): a band "
                    "whose points are those of an earlier alert of the same object is not refitted (same "
                    "result); 0: off. Only for a model trained on the fits (the shipped one is not: no "
                    "cache)")  # fmt: skip
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024,
        description="largest input or output message; larger ones are dead-lettered as message_too_large")
    dlq_max_payload_bytes: int = Field(
        default=1024 * 1024, description="a dead letter's payload is truncated to this size when the full one fails")
    max_expanded_bytes: int = Field(
        default=256 * 1024 * 1024,
        description="largest decompressed size of one archive member or container block (decompression_bomb)")
    parquet_batch_rows: int = Field(default=256, description="rows converted at a time from a Parquet alert dump")
    archive_schema_version: str | None = Field(
        default=None, description="schema 'major.minor' of Parquet alert dumps (None: inferred from the columns)")
    scores: bool = True
    host_catalog: str | None = Field(default=None, description="HEALPix/HATS galaxy catalog for host matching")
    exactly_once: bool = False
    sink_topics: Literal["create", "require", "unchecked"] = Field(
        default="create",
        description="Kafka sink topics (outputs, scores, DLQ, ledger) missing at start: 'create' them (broker "
                    "defaults for partitions and replication) before consuming, or 'require' them (a missing one "
                    "stops the worker); 'unchecked' skips the check, for a cluster whose metadata the worker may "
                    "not read, and leaves a missing topic to auto-creation, which can lose its first records "
                    "(consumers/topics.py)")  # fmt: skip
    dedup: bool = Field(default=False, description="drop repeats of a diaSourceId (run --dedup)")
    dedup_window: int = Field(default=10_000_000, gt=0, description="how many distinct ids --dedup remembers")
    dedup_path: str | None = Field(
        default=None, description="--dedup state (LMDB directory); default .alertbroker-dedup/<group_id>")
    transactional_id: str | None = Field(default=None, description="stable per worker replica (fencing)")
    metrics_port: int | None = None
    metrics_host: str = Field(default="127.0.0.1", description="address of /metrics, /healthz, /readyz")
    torch_threads: int = 1
    model: str = Field(default="default", description="'default' (shipped weights), 'default-2026-12-04' (the "
                       "previous default), 'cascade' or 'ensemble' (the shipped seed ensembles: docs/models.md), a "
                       "checkpoint (.pt) or ensemble manifest (.json) path, or 'none'")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'")
    attribution: bool = Field(
        default=False, description="publish annotations.attribution (modality attribution, docs/attribution.md); "
                                   "off by default: it adds ~20 % to enrich() on CPU")  # fmt: skip
    cutouts: bool = Field(
        default=True, description="let a model that reads cutouts (train --images) read the alerts' stamps; false "
                                  "serves it as if every alert came without them (docs/cutouts.md: a model trained "
                                  "on simulated stamps does not transfer to Rubin's)")  # fmt: skip
    log_level: str = "INFO"
    log_format: str = Field(default="text", description="'text' or 'json' (one object per line)")

    @classmethod
    def from_env(cls) -> Settings:
        """``Settings()`` from the defaults and the environment, built once per distinct ``ALERTBROKER__*`` set.

        Building settings parses the whole environment (~10-20 ms); readers called per file or per fuzz input
        use this instead, and a changed variable still gives new settings.
        """
        key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("ALERTBROKER__")))
        return _from_env(key)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings from an optional TOML file, then the environment, then ``overrides``.

        Raises
        ------
        ConfigError
            For an unreadable or invalid file or value. A hostile file (e.g. arrays nested
            thousands deep, which make ``tomllib`` recurse) is a config error too, never a raw
            ``RecursionError`` traceback.
        """
        try:
            data: dict[str, Any] = {}
            if path is not None:
                data = tomllib.loads(Path(path).read_text())
            env = cls()  # environment (and defaults)
            merged = _deep_merge(data, env.model_dump(exclude_unset=True))
            merged = _deep_merge(merged, overrides)
            return cls.model_validate(merged)
        except RecursionError as e:
            raise ConfigError(f"config {path}: nested too deeply to read") from e
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"config {path}: {type(e).__name__}: {e}") from e
        except ValidationError as e:
            raise ConfigError(f"invalid settings: {e}") from e


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@functools.lru_cache(maxsize=8)
def _from_env(_key: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()  # _key: the ALERTBROKER__ variables this was built from (the cache key)
