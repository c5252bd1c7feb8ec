"""Schema Registry lookups through confluent-kafka's client, for ids not shipped locally."""

from __future__ import annotations

import logging

from broker.errors import RegistryUnavailable
from broker.settings import RegistrySettings

log = logging.getLogger(__name__)


class RegistryResolver:
    """Callable ``schema_id -> schema text | None`` backed by a Confluent-compatible registry.

    The :class:`broker.schemas.SchemaStore` caches what it returns (ids never change).
    A 404 means 'unknown id' (the alert is dead-lettered as ``unknown_schema``);
    anything else (network down, 5xx) raises :class:`RegistryUnavailable` so the
    worker retries instead of dead-lettering good alerts.
    """

    def __init__(self, settings: RegistrySettings) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf = {"url": settings.url}
        if settings.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = settings.basic_auth_user_info.get_secret_value()
        self.client = SchemaRegistryClient(conf)

    def __call__(self, schema_id: int) -> str | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as e:
            if e.http_status_code == 404:
                return None
            raise RegistryUnavailable(f"schema registry error for id {schema_id}: {e}") from e
        except Exception as e:  # noqa: BLE001 - connection errors come in many types
            raise RegistryUnavailable(f"schema registry unreachable for id {schema_id}: {e}") from e
        return str(schema.schema_str)
