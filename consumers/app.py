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
from consumers.checkpoint import AtLeastOnce, Checkpoint
from consumers.dedup import Deduplicator, open_deduplicator
from consumers.eos import Transactional, default_transactional_id
from consumers.kafka_clients import client_conf, make_admin, producer_conf
from consumers.ledger import JsonlFileSink, Ledger
from consumers.runner import Runner
from consumers.sinks import AvroDirSink, DLQFileSink, KafkaSink, Sink, make_producer
from consumers.sources import FileSource, KafkaSource, Source
from consumers.timerange import TimeRange
from consumers.topics import ensure_topics
from consumers.uri import FileURI, KafkaURI, parse_uri

log = logging.getLogger(__name__)


def make_store(settings: Settings) -> SchemaStore:
    """A schema store, with the Schema Registry as resolver when one is configured."""
    if settings.registry.url:
        from consumers.registry import RegistryResolver

        return SchemaStore(resolver=RegistryResolver(settings.registry))
    return SchemaStore()


def make_sink(uri: str, settings: Settings, store: SchemaStore, kind: str, producer: Any = None) -> Sink:
    """A sink for ``uri``; ``kind`` is ``enriched``, ``scores`` or ``dlq``; ``producer`` is shared if given."""
    parsed = parse_uri(uri)
    if isinstance(parsed, KafkaURI):
        return KafkaSink(producer_conf(settings, parsed), parsed.topic, producer)
    assert isinstance(parsed, FileURI)
    if kind == "dlq":
        return DLQFileSink(parsed.path)
    return AvroDirSink(parsed.path, store, prefix=kind)


def make_ledger(uri: str, settings: Settings, producer: Any = None) -> Ledger:
    """The count ledger of a worker, written to ``uri`` (a Kafka topic, or JSON lines in a directory)."""
    parsed = parse_uri(uri)
    if isinstance(parsed, KafkaURI):
        return Ledger(KafkaSink(producer_conf(settings, parsed), parsed.topic, producer), settings.kafka.group_id)
    return Ledger(JsonlFileSink(parsed.path), settings.kafka.group_id)


def default_side_uri(sink: str, suffix: str) -> str:
    """``<topic>-<suffix>`` next to a Kafka sink, ``<dir>/<suffix>`` next to a file sink."""
    parsed = parse_uri(sink)
    if isinstance(parsed, KafkaURI):
        return f"kafka://{parsed.bootstrap}/{parsed.topic}-{suffix}"
    return f"file://{Path(parsed.path) / suffix}"


def make_predictor(settings: Settings) -> Predictor:
    """The model named by ``settings.model``: a shipped model, a checkpoint or ensemble manifest path, or none."""
    if settings.model == "none":
        return NullPredictor()
    from models.predictor import SHIPPED_MODELS, load_predictor

    path = SHIPPED_MODELS.get(settings.model, Path(settings.model))
    if settings.model in SHIPPED_MODELS and not path.exists():
        log.warning("no shipped weights at %s: scores will be null (train them: see docs/models.md)", path)
        return NullPredictor()
    import torch

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_predictor(path, device=device, threads=settings.torch_threads, attribution=settings.attribution)


def make_featurizer(settings: Settings, predictor: Predictor) -> Featurizer | None:
    """The featurizer stage: needed by a model, or by host matching when a catalog is set."""
    if settings.host_catalog is None and isinstance(predictor, NullPredictor):
        return None  # nothing would consume the features: skip the work
    from broker.features import BandFitCache, FeatureConfig, GalaxyCatalog, HostMatcher, featurize, warmup

    hosts = HostMatcher(GalaxyCatalog(settings.host_catalog)) if settings.host_catalog else None
    warmup()  # compile (or load from cache) every kernel now, not on the first batch
    # the model's training settings; None or absent: the defaults
    config = FeatureConfig.from_settings(getattr(predictor, "feature_settings", None), settings.lc_tokens)
    cache = settings.fit_cache_size and config.bazin  # the cache holds Bazin fits: none without them
    return functools.partial(featurize, config=config, hosts=hosts,
                             fits=BandFitCache(settings.fit_cache_size) if cache else None)


def _transactional_producer(source: str, sink: str, dlq: str | None, scores: str | None,
                            settings: Settings, ledger: str | None = None) -> Any:  # fmt: skip
    uris = [parse_uri(u) for u in (source, sink, dlq, scores, ledger) if u is not None and u != "none"]
    if not all(isinstance(u, KafkaURI) for u in uris):
        raise ValueError("--exactly-once needs kafka:// URIs for the source and every sink")
    tid = settings.transactional_id or default_transactional_id(settings.kafka.group_id)
    first = uris[1]
    assert isinstance(first, KafkaURI)
    return make_producer(producer_conf(settings, first, transactional_id=tid))


def prepare_sink_topics(settings: Settings, uris: list[str | None]) -> None:
    """Create (or, with ``sink_topics="require"``, check) the Kafka topics among ``uris`` before consuming.

    Raises
    ------
    consumers.topics.SinkTopicMissing
        See :func:`consumers.topics.ensure_topics`.
    """
    if settings.sink_topics == "unchecked":
        return
    by_cluster: dict[str, tuple[KafkaURI, list[str]]] = {}
    for uri in uris:
        parsed = parse_uri(uri) if uri is not None else None
        if isinstance(parsed, KafkaURI):
            by_cluster.setdefault(parsed.bootstrap, (parsed, []))[1].append(parsed.topic)
    for first, topics in by_cluster.values():
        ensure_topics(make_admin(settings, first), topics, create=settings.sink_topics == "create")


def make_enricher(settings: Settings, predictor: Predictor | None = None, scores: bool | None = None) -> Enricher:
    """The enrichment stage of ``alertbroker run`` for ``settings`` (also used by ``eval served``).

    ``predictor`` replaces the model named by ``settings.model``; ``scores`` defaults to ``settings.scores``.
    """
    predictor = predictor or make_predictor(settings)
    reads = settings.cutouts and bool(getattr(predictor, "reads_images", False))  # only image models pay
    decoder = BatchDecoder(make_store(settings), max_history_rows=settings.max_history_rows, cutouts=reads)
    return Enricher(decoder, predictor, featurizer=make_featurizer(settings, predictor),
                    broker_name=settings.broker_name, broker_version=__version__,
                    scores=settings.scores if scores is None else scores,
                    host_catalog_name=Path(settings.host_catalog or "hosts").name)  # fmt: skip


def build_runner(
    source: str, sink: str, settings: Settings, dlq: str | None = None, scores: str | None = None,
    predictor: Predictor | None = None, max_idle_s: float | None = None, metrics: Metrics | None = None,
    exactly_once: bool = False, time_range: TimeRange | None = None, ledger: str | None = None,
) -> Runner:  # fmt: skip
    """Build a runner from URIs. ``scores="none"`` disables the scores output.

    ``exactly_once`` needs Kafka for the source and every sink (one transactional producer).
    ``time_range`` cuts the source (:mod:`consumers.timerange`: Kafka by publication time, files by MJD).
    ``ledger`` is the count ledger's URI (default ``<sink>-ledger`` / ``<dir>/ledger``; ``"none"``: no ledger).
    """
    metrics = metrics or Metrics()
    enricher = make_enricher(settings, predictor, scores=settings.scores and scores != "none")
    store, decoder = enricher.decoder.store, enricher.decoder
    producer = None
    ledger_uri = None if ledger == "none" else ledger or default_side_uri(sink, "ledger")
    dlq = dlq or default_side_uri(sink, "dlq")
    scores = (scores or default_side_uri(sink, "scores")) if enricher.scores else None
    prepare_sink_topics(settings, [sink, dlq, scores, ledger_uri])
    if exactly_once:
        producer = _transactional_producer(source, sink, dlq, scores, settings, ledger_uri)
    out = make_sink(sink, settings, store, "enriched", producer)
    dlq_sink = make_sink(dlq, settings, store, "dlq", producer)
    scores_sink = None if scores is None else make_sink(scores, settings, store, "scores", producer)
    runner_box: list[Runner] = []
    parsed = parse_uri(source)
    src: Source
    if isinstance(parsed, KafkaURI):
        conf = client_conf(settings, parsed, defaults=settings.kafka.consumer_group())
        if exactly_once:
            conf.update({"enable.auto.commit": False, "isolation.level": "read_committed"})
        src = KafkaSource(conf, parsed.topic.split(","), metrics, on_revoke=lambda: runner_box[0].drain(),
                          time_range=time_range)  # fmt: skip
    else:
        src = FileSource(parsed.path, decoder, max_expanded_bytes=settings.max_expanded_bytes, time_range=time_range,
                         schema_version=settings.archive_schema_version)  # fmt: skip
    try:
        runner = _assemble(src, (enricher, out, dlq_sink, scores_sink), metrics, settings, max_idle_s, producer,
                           sink, ledger_uri)  # fmt: skip
    except BaseException:  # a consumer left to the garbage collector can hang the interpreter's exit
        src.close()
        raise
    runner_box.append(runner)
    return runner


def _assemble(src: Source, stages: tuple[Enricher, Sink, Sink, Sink | None], metrics: Metrics, settings: Settings,
              max_idle_s: float | None, producer: Any, sink: str, ledger_uri: str | None) -> Runner:  # fmt: skip
    """The runner around ``src``: its checkpoint (at-least-once, transactional, dedup) and ledger."""
    enricher, out, dlq_sink, scores_sink = stages
    args = (src, enricher, out, dlq_sink, scores_sink, metrics, settings.batch_size, settings.batch_timeout_s,
            settings.max_inflight_batches, max_idle_s, __version__)  # fmt: skip
    checkpoint: Checkpoint = AtLeastOnce(src)
    if producer is not None:
        assert isinstance(src, KafkaSource)  # _transactional_producer checked every URI
        checkpoint = Transactional(producer, src)
    dedup: Deduplicator | None = None
    if settings.dedup:  # after the transactional producer fenced a zombie: the sink is read to its end
        checkpoint = dedup = open_deduplicator(settings, checkpoint, sink)
    runner = Runner(*args, checkpoint=checkpoint, max_message_bytes=settings.max_message_bytes,
                    dlq_max_payload_bytes=settings.dlq_max_payload_bytes,
                    batch_linger_s=settings.batch_linger_s, dedup=dedup)  # fmt: skip
    if ledger_uri is not None:
        runner.ledger = make_ledger(ledger_uri, settings, producer)
    return runner
