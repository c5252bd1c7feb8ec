"""Every Kafka consumer, producer and admin client of alertbroker is built here.

The configuration of a client is layered, later layers winning:

1. the caller's ``defaults`` (a fresh ``group.id``, ``linger.ms`` ...),
2. ``settings.kafka``: bootstrap, ``security.protocol``, SASL, TLS and ``[kafka.extra]``
   (:meth:`broker.settings.KafkaSettings.librdkafka`), so the security settings of the TOML
   file (``--config``) and of the environment (``ALERTBROKER__KAFKA__...``) always apply,
3. the caller's ``overrides``,
4. the URI's bootstrap servers and its ``?key=value`` parameters.

Producers are idempotent with ``acks=all`` (forced) and get ``message.max.bytes`` from
``settings.max_message_bytes`` plus :data:`HEADROOM_BYTES` for the annotations and headers.
Every client gets an ``error_cb`` that raises :class:`KafkaAuthenticationError` from the
next ``poll``/``consume``/``flush`` when the broker refuses the credentials, instead of
retrying forever.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from broker.settings import Settings
from consumers.uri import KafkaURI, parse_uri

log = logging.getLogger(__name__)

#: Room above ``settings.max_message_bytes`` for the annotations and headers of an enriched alert.
HEADROOM_BYTES = 1024 * 1024
#: librdkafka's producer defaults (``linger.ms`` and compression); callers may override them.
PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 10, "compression.type": "lz4"}
#: Forced on every producer: retries never duplicate or reorder, and a write is acknowledged by all replicas.
PRODUCER_FORCED: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
_SECRET_KEYS = ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")


class _Producer(Producer):  # type: ignore[misc]
    """A ``Producer`` that can be weakly referenced (by its own error callback)."""


class KafkaAuthenticationError(RuntimeError):
    """The broker refused the client's credentials (SASL user, password or mechanism)."""


def target_uri(target: str | KafkaURI) -> KafkaURI:
    """``target`` as a :class:`KafkaURI` (``kafka://host:port/topic?params``).

    Raises
    ------
    ValueError
        When ``target`` is not a ``kafka://`` URI.
    """
    parsed = parse_uri(target) if isinstance(target, str) else target
    if not isinstance(parsed, KafkaURI):
        raise ValueError(f"not a kafka:// URI: {target!r}")
    return parsed


def client_conf(settings: Settings, target: str | KafkaURI | None = None, *,
                defaults: Mapping[str, Any] | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """librdkafka configuration: ``defaults`` < ``settings.kafka`` < ``overrides`` < the URI.

    Parameters
    ----------
    settings : Settings
        Its ``kafka`` section gives the bootstrap servers, security settings and extras.
    target : str or KafkaURI, optional
        Its bootstrap servers replace the settings' ones; its query parameters come last.
    defaults, overrides : mapping, optional
        Per-client settings below and above ``settings.kafka``.

    Returns
    -------
    dict
        The configuration, secrets revealed: pass it to a client, never log it (see :func:`redacted`).
    """
    conf: dict[str, Any] = {**(defaults or {}), **settings.kafka.librdkafka(), **(overrides or {})}
    if target is not None:
        uri = target_uri(target)
        conf["bootstrap.servers"] = uri.bootstrap
        conf.update(uri.params)
    return conf


def producer_message_max_bytes(settings: Settings | None = None) -> int:
    """The producer's ``message.max.bytes``: the largest alert allowed plus :data:`HEADROOM_BYTES`."""
    limit = settings.max_message_bytes if settings is not None else Settings.model_fields["max_message_bytes"].default
    return int(limit) + HEADROOM_BYTES


def producer_conf(settings: Settings, target: str | KafkaURI | None = None, *, transactional_id: str | None = None,
                  defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Configuration of an idempotent producer (``acks=all``), transactional when ``transactional_id`` is given."""
    base = {**PRODUCER_DEFAULTS, "message.max.bytes": producer_message_max_bytes(settings), **(defaults or {})}
    conf = {**client_conf(settings, target, defaults=base), **PRODUCER_FORCED}
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
    return conf


def redacted(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` with its secrets replaced by ``**********`` (for logs and error messages)."""
    return {k: "**********" if k in _SECRET_KEYS else v for k, v in conf.items()}


def error_callback(conf: Mapping[str, Any], on_auth_failure: Callable[[], None] | None = None,
                   ) -> Callable[[KafkaError], None]:  # fmt: skip
    """An ``error_cb`` that raises :class:`KafkaAuthenticationError` on a refused login.

    Other errors are transient (librdkafka retries them and logs them itself) unless fatal: those
    are logged here at ERROR, the others at DEBUG only.

    ``on_auth_failure`` runs first (a producer purges its queue there, so that a ``flush`` returns at once).
    """
    who = f"{conf.get('security.protocol', 'PLAINTEXT')}, {conf.get('sasl.mechanism', 'no SASL mechanism')}, " \
          f"user {conf.get('sasl.username')!r}, bootstrap {conf.get('bootstrap.servers')}"  # fmt: skip

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            if on_auth_failure is not None:
                on_auth_failure()
            raise KafkaAuthenticationError(
                f"Kafka authentication failed ({who}): {err.str()}; check the security settings "
                "(ALERTBROKER__KAFKA__SASL_USERNAME, ALERTBROKER__KAFKA__SASL_PASSWORD, [kafka] in --config)")
        if err.fatal():
            log.error("kafka: fatal: %s", err.str())
        else:
            log.debug("kafka: %s", err.str())

    return on_error


def new_consumer(conf: Mapping[str, Any], **callbacks: Any) -> Any:
    """A ``Consumer`` from a configuration built by :func:`client_conf` (``callbacks``: e.g. ``stats_cb``)."""
    return Consumer({"error_cb": error_callback(conf), **conf}, **callbacks)


def new_producer(conf: Mapping[str, Any]) -> Any:
    """A ``Producer`` from ``conf`` with the producer defaults, and idempotence and ``acks=all`` forced.

    ``conf`` normally comes from :func:`producer_conf`; without a ``message.max.bytes`` it gets the
    default settings' one.
    """
    full = {**PRODUCER_DEFAULTS, "message.max.bytes": producer_message_max_bytes(), **conf, **PRODUCER_FORCED}
    ref: list[weakref.ref[Any]] = []  # weak: the producer owns its error_cb, which must not own the producer

    def purge() -> None:
        if ref and (p := ref[0]()) is not None:
            p.purge()

    producer = _Producer({"error_cb": error_callback(full, purge), **full})
    ref.append(weakref.ref(producer))
    return producer


def make_consumer(settings: Settings, target: str | KafkaURI | None = None, *,
                  defaults: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
                  **callbacks: Any) -> Any:  # fmt: skip
    """A ``Consumer`` configured by :func:`client_conf` (the caller picks ``group.id`` in ``defaults``)."""
    return new_consumer(client_conf(settings, target, defaults=defaults, overrides=overrides), **callbacks)


def make_producer(settings: Settings, target: str | KafkaURI | None = None, *, transactional_id: str | None = None,
                  defaults: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
    """An idempotent ``Producer`` configured by :func:`producer_conf`."""
    return new_producer(producer_conf(settings, target, transactional_id=transactional_id, defaults=defaults))


def make_admin(settings: Settings, target: str | KafkaURI | None = None) -> Any:
    """An ``AdminClient`` with the bootstrap and security settings of :func:`client_conf`."""
    conf = client_conf(settings, target)
    full: dict[str, Any] = {"error_cb": error_callback(conf), **conf}
    return AdminClient(full)


def fresh_group(settings: Settings, purpose: str) -> str:
    """A consumer group of its own, ``<settings group_id>-<purpose>-<random>``.

    It starts with the configured ``group_id``, which on Rubin's stream must start with the
    username, so the broker's ACLs accept it.
    """
    return f"{settings.kafka.group_id}-{purpose}-{uuid.uuid4().hex[:12]}"
