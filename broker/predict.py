"""The predictor interface that ``enrich()`` calls, and the null predictor.

``broker`` imports no torch: models implement :class:`Predictor` in ``models/``.
A prediction may be None per alert and per head: that is the ``can_predict()``
gate (too few points, no usable data) and is published as a null field, never
as a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from broker.annotations_codec import HostAnnotation
from broker.batch import AlertBatch

#: Taxonomy code of the rotating-star class (not an ELAsTiCC code; the simulator's
#: ``Rotator``, :mod:`broker.sim.taxonomy`): alerts classified so get an age.
ROTATOR_CODE = 2902


@dataclass
class Predictions:
    """Per-alert model outputs for a batch of ``n`` alerts.

    Attributes
    ----------
    probs : ndarray (n, n_classes) or None
        Class probabilities; rows of NaN mean 'gate closed' for that alert.
    photoz : ndarray (n, 8) or None
        mean, sigma, mode, q05, q16, q50, q84, q95; NaN rows = no photo-z.
    anomaly : ndarray (n,) or None
        Anomaly score, higher = stranger; NaN = no score.
    hosts : list of HostAnnotation or None, length n, or None
    embedding : ndarray (n, EMBEDDING_DIM) or None
        The model's compact embedding (``annotations.embedding``); NaN rows = none.
    rotation_age : ndarray (n, 3) or None
        log10(age / yr), its sigma (dex) and the rotation period (days) for alerts
        classified as rotating stars (:func:`broker.features.gyro.rotation_ages`), NaN
        rows elsewhere (``annotations.rotationAge``); set by ``enrich()`` when the model
        knows the class.
    attribution : ndarray (n, len(ATTRIBUTION_TARGETS), len(ATTRIBUTION_PARTS)) or None
        Modality attribution in bits (``annotations.attribution``), per target (class, photo-z);
        a NaN row of a target = none for that target.
    forecast : ndarray (n, *FORECAST_SHAPE) or None
        Flux quantiles (nJy) per band u..y, horizon (``FORECAST_HORIZONS_DAYS``) and quantile
        (``annotations.forecast``); NaN for a band the alert has no data in, all NaN = none.
    real_bogus : ndarray (n,) or None
        P(real) from a real/bogus head (``annotations.realBogus``); NaN = none.
    cutouts_read : ndarray (n,) or None
        1.0 where the model read the alert's cutouts as image tokens, else 0 (``annotations.cutoutsRead``).
    photoz_if_class : ndarray (n, 8) or None
        The photo-z if the alert is of the predictor's ``photoz_if_class_ids``, columns as ``photoz``
        (``annotations.photozIfClass``); NaN rows = none.
    extra : dict
        Further per-alert outputs that are not published.
    """

    probs: np.ndarray | None = None
    photoz: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    hosts: list[HostAnnotation | None] | None = None
    embedding: np.ndarray | None = None
    rotation_age: np.ndarray | None = None
    attribution: np.ndarray | None = None
    forecast: np.ndarray | None = None
    real_bogus: np.ndarray | None = None
    cutouts_read: np.ndarray | None = None
    photoz_if_class: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: The per-alert array fields of :class:`Predictions` (row ``k`` belongs to alert ``k``), derived
#: from the dataclass so that a new output is carried everywhere rows are stacked or taken.
ARRAY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Predictions) if f.name not in ("hosts", "extra"))


class Predictor(Protocol):
    """What ``enrich()`` needs from a model."""

    name: str | None
    version: str | None
    taxonomy: str | None
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    #: Featurizer settings the model needs (``FeatureConfig.settings()``); None (or absent, in
    #: predictors written before it): the defaults.
    feature_settings: dict[str, bool | int | float] | None
    #: The classes ``Predictions.photoz_if_class`` assumes (``annotations.photozIfClass.classIds``); empty
    #: (or absent, in predictors written before it): the predictor gives none.
    photoz_if_class_ids: tuple[int, ...]

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """Score a decoded batch (``features`` from the featurizer stage, if any)."""
        ...


class NullPredictor:
    """Predicts nothing: every score field is published as null.

    Used until a trained model is configured, so the stream never carries fake
    scores. ``name`` is None, so ``annotations.modelName`` is null too.
    """

    name: str | None = None
    version: str | None = None
    taxonomy: str | None = None
    class_ids: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    feature_settings: dict[str, bool | int | float] | None = None
    photoz_if_class_ids: tuple[int, ...] = ()

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """Return empty predictions for the batch."""
        return Predictions()
