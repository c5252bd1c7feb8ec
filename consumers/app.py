"""Wire settings and URIs into a ready :class:`Runner` (the ``run`` command's body)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from broker import __version__
from broker.decode import BatchDecoder
from broker.enrich import Enricher, Featurizer
from broker.metrics import Metrics
from broker.predict import NullPredictor, Predictor
from broker.schemas import SchemaStore
from broker.settings import Settings
from consumers.runner import Runner
from consumers.sinks import AvroDirSink, DLQFileSink, KafkaSink, Sink
from consumers.sources import FileSource, KafkaSource, Source
from consumers.uri import FileURI, KafkaURI, parse_uri

log = logging.getLogger(__name__)


def make_store(settings: Settings) -> SchemaStore:
    """A schema store, with the Schema Registry as resolver when one is configured."""
    if settings.registry.url:
        from consumers.registry import RegistryResolver

        return SchemaStore(resolver=RegistryResolver(settings.registry))
    return SchemaStore()


def _kafka_conf(settings: Settings, uri: KafkaURI) -> dict[str, Any]:
    return {**settings.kafka.librdkafka(), "bootstrap.servers": uri.bootstrap, **uri.params}


def make_sink(uri: str, settings: Settings, store: SchemaStore, kind: str) -> Sink:
    """A sink for ``uri``; ``kind`` is ``enriched``, ``scores`` or ``dlq``."""
    parsed = parse_uri(uri)
    if isinstance(parsed, KafkaURI):
        return KafkaSink(_kafka_conf(settings, parsed), parsed.topic)
    assert isinstance(parsed, FileURI)
    if kind == "dlq":
        return DLQFileSink(parsed.path)
    return AvroDirSink(parsed.path, store, prefix=kind)


def default_side_uri(sink: str, suffix: str) -> str:
    """``<topic>-<suffix>`` next to a Kafka sink, ``<dir>/<suffix>`` next to a file sink."""
    parsed = parse_uri(sink)
    if isinstance(parsed, KafkaURI):
        return f"kafka://{parsed.bootstrap}/{parsed.topic}-{suffix}"
    return f"file://{Path(parsed.path) / suffix}"


def make_featurizer(settings: Settings, predictor: Predictor) -> Featurizer | None:
    """The featurizer stage: needed by a model, or by host matching when a catalog is set."""
    if settings.host_catalog is None and isinstance(predictor, NullPredictor):
        return None  # nothing would consume the features: skip the work
    from broker.features import FeatureConfig, GalaxyCatalog, HostMatcher, featurize, warmup

    hosts = HostMatcher(GalaxyCatalog(settings.host_catalog)) if settings.host_catalog else None
    warmup()  # compile (or load from cache) every kernel now, not on the first batch
    return functools.partial(featurize, config=FeatureConfig(), hosts=hosts)


def build_runner(
    source: str, sink: str, settings: Settings, dlq: str | None = None, scores: str | None = None,
    predictor: Predictor | None = None, max_idle_s: float | None = None, metrics: Metrics | None = None,
) -> Runner:  # fmt: skip
    """Build a runner from URIs. ``scores="none"`` disables the scores output."""
    store = make_store(settings)
    decoder = BatchDecoder(store, max_history_rows=settings.max_history_rows)
    metrics = metrics or Metrics()
    predictor = predictor or NullPredictor()
    enricher = Enricher(decoder, predictor, featurizer=make_featurizer(settings, predictor),
                        broker_name=settings.broker_name, broker_version=__version__,
                        scores=settings.scores and scores != "none",
                        host_catalog_name=Path(settings.host_catalog or "hosts").name)  # fmt: skip
    out = make_sink(sink, settings, store, "enriched")
    dlq_sink = make_sink(dlq or default_side_uri(sink, "dlq"), settings, store, "dlq")
    scores_sink = None
    if enricher.scores:
        scores_sink = make_sink(scores or default_side_uri(sink, "scores"), settings, store, "scores")
    runner_box: list[Runner] = []
    parsed = parse_uri(source)
    src: Source
    if isinstance(parsed, KafkaURI):
        conf = {"group.id": settings.kafka.group_id, "auto.offset.reset": settings.kafka.auto_offset_reset,
                "session.timeout.ms": settings.kafka.session_timeout_ms,
                "partition.assignment.strategy": settings.kafka.partition_assignment_strategy,
                **_kafka_conf(settings, parsed)}  # fmt: skip
        src = KafkaSource(conf, parsed.topic.split(","), metrics, on_revoke=lambda: runner_box[0].drain())
    else:
        src = FileSource(parsed.path, decoder)
    runner = Runner(src, enricher, out, dlq_sink, scores_sink, metrics, settings.batch_size,
                    settings.batch_timeout_s, settings.max_inflight_batches, max_idle_s, __version__)  # fmt: skip
    runner_box.append(runner)
    return runner
