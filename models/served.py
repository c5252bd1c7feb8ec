"""Alerts as they are served: an archive through the ``alertbroker run`` enrichment, read back.

:func:`enrich_archive` reads an alert archive (directory, Avro containers, tar bundles) with the
same reader as the file source, enriches it micro-batch by micro-batch with the same
:class:`broker.enrich.Enricher` that ``consumers.app.build_runner`` builds (schema store,
``BatchDecoder``, ``make_featurizer``, ``make_predictor``, the classification gate), then decodes the
ENRICHED records and flattens them with :func:`broker.flatten.flatten`: every score comes from the
published annotations, never from the model directly. :func:`join_truth` attaches the simulator's
``truth.parquet`` by ``diaObjectId``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.flatten import flatten
from broker.predict import Predictor
from broker.settings import Settings


@dataclass
class ServedAlerts:
    """The enriched alerts of an archive, one flat row each.

    Attributes
    ----------
    alerts : pl.DataFrame
        :func:`broker.flatten.flatten` rows of the enriched records (``best_class_id``,
        ``p_<classId>``, ``photoz_*``, ``anomaly_score``, ``n_det``, ``classification_state``, ...).
    n_messages : int
        Messages read from the archive (alerts plus unreadable pieces).
    dead : dict of str to int
        Dead letters by reason (unreadable archive pieces and alerts ``enrich`` rejected).
    class_ids, class_names : tuple
        The served model's taxonomy (empty for the null predictor).
    host_catalog : str or None
        The host catalog used for host matching (and hence photo-z), if any.
    parts : pl.DataFrame or None
        ``diaSourceId`` and the parts of the anomaly score (:mod:`models.served_anomaly`), when recorded.
    """

    alerts: pl.DataFrame
    n_messages: int
    dead: dict[str, int] = field(default_factory=dict)
    class_ids: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    host_catalog: str | None = None
    parts: pl.DataFrame | None = None


class PassThrough:
    """A :class:`broker.predict.Predictor` that answers as ``inner`` does (same name, version, taxonomy,
    featurizer settings and ``photozIfClass`` classes); recorders subclass it and keep what they need
    from each batch."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.name, self.version, self.taxonomy = inner.name, inner.version, inner.taxonomy
        self.class_ids, self.class_names = inner.class_ids, inner.class_names
        self.reads_images: bool = bool(getattr(inner, "reads_images", False))
        self.feature_settings = getattr(inner, "feature_settings", None)  # featurize as inner needs
        self.photoz_if_class_ids: tuple[int, ...] = tuple(getattr(inner, "photoz_if_class_ids", ()))

    def predict(self, batch: Any, features: Any | None) -> Any:
        """``inner.predict``."""
        return self.inner.predict(batch, features)


def make_enricher(settings: Settings, predictor: Predictor | None = None) -> Enricher:
    """The enrichment stage of ``alertbroker run`` (:func:`consumers.app.make_enricher`), scores record off."""
    from consumers.app import make_enricher as run_enricher

    return run_enricher(settings, predictor, scores=False)


def enrich_archive(archive: str | Path, settings: Settings, predictor: Predictor | None = None,
                   max_alerts: int = 0, object_ids: Collection[int] | None = None) -> ServedAlerts:  # fmt: skip
    """Enrich every alert of ``archive`` as ``alertbroker run`` would and flatten the outputs.

    The archive is read by the ``run`` command's :class:`consumers.sources.FileSource`; unreadable
    pieces and alerts that ``enrich`` rejects are counted as dead letters by reason.

    Parameters
    ----------
    archive : str or Path
        A file, or a directory searched recursively for ``.avro`` / ``.tar.gz`` alert files (a
        simulator output directory works: its Parquet files are skipped).
    settings : Settings
        Serving settings (see :func:`make_enricher`); ``batch_size`` sets the micro-batch.
    predictor : Predictor, optional
        Replaces the model named by ``settings.model``.
    max_alerts : int
        Read at most this many messages, in archive order (0 = all).
    object_ids : collection of int, optional
        Enrich only alerts of these ``diaObjectId`` (the others are decoded to read the id, then
        skipped; messages that do not decode go to ``enrich`` and are dead-lettered there).

    Returns
    -------
    ServedAlerts
    """
    from consumers.sources import FileSource

    enricher = make_enricher(settings, predictor)
    reader = BatchDecoder(enricher.decoder.store)
    source = FileSource(archive, enricher.decoder)  # default size caps, as a default ``run``
    frames: list[pl.DataFrame] = []
    dead: Counter[str] = Counter()
    n = 0
    wanted = np.fromiter(object_ids or (), np.int64)
    while max_alerts <= 0 or n < max_alerts:
        size = max(settings.batch_size, 1) if max_alerts <= 0 else min(max(settings.batch_size, 1), max_alerts - n)
        chunk = source.poll_batch(size, 0.0)
        if not chunk:
            break
        n += len(chunk)
        values: list[bytes | None] = []
        for m in chunk:
            if m.error is not None:
                dead[m.error.reason] += 1
            else:
                values.append(m.value)
        if object_ids is not None:
            values = _of_objects(reader, values, wanted)
        res = enricher.enrich(values)
        dead.update(d.reason for d in res.dead)
        out: list[bytes | None] = [o.value for o in res.outputs]
        if out:
            frames.append(flatten(reader.decode(out), out))
    source.close()
    alerts = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    p = enricher.predictor
    return ServedAlerts(alerts, n, dict(dead), tuple(p.class_ids), tuple(p.class_names), settings.host_catalog)


def _of_objects(reader: BatchDecoder, values: list[bytes | None], wanted: np.ndarray) -> list[bytes | None]:
    """The messages of ``values`` whose alert belongs to an object of ``wanted`` (undecodable ones kept)."""
    dec = reader.decode(values)
    keep = np.ones(len(values), bool)
    keep[dec.index] = np.isin(dec.batch.table["diaObjectId"], wanted)
    return [v for v, k in zip(values, keep, strict=True) if k]


def join_truth(alerts: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """Attach the truth's class, redshift, host, split and generator columns by ``diaObjectId``.

    A left join: alerts without a truth row keep null truth columns (and are counted as such).
    """
    cols = [c for c in ("diaObjectId", "class_code", "class_name", "split", "redshift", "host_galaxy_id", "generator")
            if c in truth.columns]  # fmt: skip
    return alerts.join(truth.select(cols).unique("diaObjectId"), on="diaObjectId", how="left")


def latest_alerts(df: pl.DataFrame) -> pl.DataFrame:
    """The latest alert (largest ``mjd``) of every object."""
    return df.sort("mjd").group_by("diaObjectId", maintain_order=True).last()
