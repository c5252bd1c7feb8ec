"""Serving: :class:`MultimodalPredictor` implements :class:`broker.predict.Predictor`.

Usage::

    from models.predictor import load_default
    predictor = load_default(threads=settings.torch_threads)   # CPU
    preds = predictor.predict(batch, featurize(batch))           # Predictions

Gates (``can_predict``): a class / anomaly row needs at least ``min_detections``
detections among the light-curve tokens; a photo-z row needs at least
``min_host_bands`` host magnitudes. A closed gate gives a NaN row (published as
null), never a guess. With ``attribution`` on, each scored alert also gets its modality
attribution (:mod:`models.attribution`): the class part where the class gate is open, the photo-z
part where a photo-z is served. On CUDA the batch is moved through pinned memory and run in
float32 (bf16 autocast only with ``bf16=True``: :data:`CUDA_BF16` says why not by default); on CPU
the torch thread count is ``threads``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from broker.annotations import ATTRIBUTION_PARTS, ATTRIBUTION_TARGETS, EMBEDDING_DIM
from broker.annotations_codec import FORECAST_SHAPE
from broker.batch import AlertBatch
from broker.features.registry import FEATURE_NAMES
from broker.predict import Predictions
from broker.tokens import HOST_KIND_MAG, LC_FIELDS
from models.attribution import Attributor
from models.checkpoint import load_checkpoint, served_digest
from models.forecast import to_njy
from models.heads import PHOTOZ_COLUMNS
from models.model import IMAGE_KEYS, TOKEN_KEYS, MultimodalModel
from models.photoz_cache import HostPhotozCache
from models.photoz_lc import serve_light_curve

log = logging.getLogger(__name__)
_Q50 = PHOTOZ_COLUMNS.index("q50")

#: Whether CUDA serving runs under bf16 autocast by default. No: on an H200 (2026-12-04,
#: ``scripts/gpu_parity.py``, 4,096 alerts) bf16 moved 590 alerts' photo-z quantiles by >= 0.05
#: (up to 5.9) and, through the luminosity prior's photo-z median, 13 alerts' class probabilities
#: by up to 0.83, while float32 agreed with the CPU to 2.6e-4 and served as fast (58,600 against
#: 50,100 alerts/s at batch 1,024, ``bench models``): the model is too small for bf16 to pay.
CUDA_BF16 = False
#: Largest |CPU - CUDA| difference per served output that counts as agreement (class probabilities,
#: anomaly score in -log10 units: a rare forest split may flip on round-off, photo-z quantiles).
#: Held by ``tests/test_models_train.py::test_cpu_gpu_parity`` and ``scripts/gpu_parity.py``.
CUDA_PARITY_TOL = {"probs": 0.05, "anomaly": 0.5, "photoz": 0.05}

#: Shipped default checkpoint (``alertbroker train``, see docs/models.md).
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.pt"
#: The shipped models by name (``--model NAME``): the default checkpoint alone; the default of
#: 2026-12-04 to 2026-12-06 (trained on three generators; it did better than the current default on
#: the one generator neither trained on, docs/models.md "Distilled on six generators"); and two
#: ensemble manifests (:mod:`models.ensemble`) over that previous default and three more seeds of its
#: recipe, whose photo-z, anomaly score and embedding are that primary's: ``cascade`` consults the
#: seeds where the primary is unsure (its manifest's ``consult_below``), ``ensemble`` for every alert.
#: Why the default is a single model (speed, issue 12's goal): docs/models.md, "A seed ensemble".
SHIPPED_MODELS: dict[str, Path] = {"default": DEFAULT_WEIGHTS,
                                   "default-2026-12-04": DEFAULT_WEIGHTS.parent / "members" / "default_2026-12-04.pt",
                                   "cascade": DEFAULT_WEIGHTS.with_name("cascade.json"),
                                   "ensemble": DEFAULT_WEIGHTS.with_name("ensemble.json")}


def _tokens(features: Any) -> dict[str, np.ndarray]:
    """Token arrays from a :class:`broker.features.Features` (or a dict of them)."""
    get = features.__getitem__ if isinstance(features, dict) else lambda k: getattr(features, k)
    return {k: np.asarray(get(k)) for k in TOKEN_KEYS}


def _flux_scale(features: Any) -> np.ndarray | None:
    """The ``log10_flux_scale`` feature column (None when the features carry no summary)."""
    summary = features.get("summary") if isinstance(features, dict) else getattr(features, "summary", None)
    if summary is None:
        return None
    return np.asarray(summary)[:, FEATURE_NAMES.index("log10_flux_scale")]


class MultimodalPredictor:
    """Classes, photo-z and anomaly score from one :class:`~models.model.MultimodalModel`.

    Parameters
    ----------
    model : MultimodalModel
    meta : dict
        Checkpoint description (:func:`models.checkpoint.load_checkpoint`).
    device : str
        ``cpu`` or ``cuda``.
    threads : int
        torch CPU threads (e.g. ``Settings.torch_threads``).
    batch_size : int
        Alerts per forward pass.
    min_detections, min_host_bands : int
        Gate thresholds (see the module docstring).
    photoz_selection : bool
        Serve the photo-z of an alert's host with the checkpoint's alert-selection prior
        (:mod:`models.photoz_prior`); False gives the field posterior (catalogue galaxies).
    attribution : bool
        Also compute the modality attribution (``Settings.attribution``); with ``members``, it
        explains the primary model's classification.
    members : sequence of MultimodalModel
        Seed-ensemble members (:mod:`models.ensemble`, which checks them): the served class
        probabilities are the mean of ``model``'s and theirs; every other output is ``model``'s.
    consult_below : float or None
        With ``members``: consult them only for alerts whose top probability from ``model`` is below
        this (a cascade: ``model``'s confident answers stand, at a fraction of the cost); None: always.
    """

    name: str | None = "alertbroker-multimodal"

    def __init__(self, model: MultimodalModel, meta: dict[str, Any], device: str = "cpu",
                 threads: int = 1, batch_size: int = 1024, min_detections: int = 1,
                 min_host_bands: int = 3, attribution: bool = False, photoz_selection: bool = True,
                 bf16: bool | None = None, members: Sequence[MultimodalModel] = (),
                 consult_below: float | None = None) -> None:
        self.device = torch.device(device)
        #: bf16 autocast on CUDA (``bf16=None``: the default, :data:`CUDA_BF16`); never on CPU.
        self.bf16 = self.device.type == "cuda" and (CUDA_BF16 if bf16 is None else bool(bf16))
        if self.device.type == "cpu":
            torch.set_num_threads(max(int(threads), 1))
        self.model = model.to(self.device).eval()
        self.meta = meta
        tax = meta["taxonomy"]
        self.members = [m.to(self.device).eval() for m in members]
        self.consult_below = consult_below
        #: ``FORMAT.LAYOUT+DATA_HASH.DIGEST``: the training data, then the served weights and config
        #: (:func:`models.checkpoint.served_digest`), so a changed output changes the annotations' modelVersion.
        self.version: str | None = (f"{meta['format_version']}.{meta['token_layout']}+{meta['data_hash']}."
                                    f"{served_digest(self.model)}")
        if self.members:  # the ensemble's tag (models.ensemble): which checkpoints, consulted when
            self.version += "+" + meta.get("ensemble", {}).get("tag", f"ens{1 + len(self.members)}")
        self.taxonomy: str | None = tax["name"]
        self.class_ids: tuple[int, ...] = tuple(int(c) for c in tax["class_ids"])
        self.class_names: tuple[str, ...] = tuple(tax["class_names"])
        self.batch_size = batch_size
        self.min_detections = min_detections
        self.min_host_bands = min_host_bands
        self.photoz_selection = photoz_selection
        #: The light curve's redshift likelihood gives ``photozIfClass`` and may join the served photo-z of
        #: some classes' alerts (models.photoz_lc; ``cfg.photoz_lc_join``).
        self.joint_photoz = model.photoz_lc is not None and photoz_selection
        width = len(PHOTOZ_COLUMNS) + (3 * model.cfg.n_components if self.joint_photoz else 0)
        self.photoz_cache = HostPhotozCache(self._host_photoz, self.device, width=width)
        #: Top classes whose photo-z the light curve joins: those its network was trained on (models.photoz_lc).
        self.joins = (model.photoz_lc.applies.cpu().numpy().copy() if model.photoz_lc is not None
                      else np.zeros(len(self.class_ids), bool))  # fmt: skip
        #: The classes ``photozIfClass`` assumes: the same (none without the likelihood).
        self.photoz_if_class_ids = tuple(np.asarray(self.class_ids)[self.joins].tolist()) if self.joint_photoz else ()
        self.attributor = Attributor(self.model) if attribution else None
        #: The model reads cutouts: ``enrich()``'s decoder must read the stamps (``BatchDecoder(cutouts=...)``).
        self.reads_images: bool = bool(model.cfg.encoder.images)
        #: The featurizer settings the model was trained on; ``enrich()``'s featurizer must use them.
        self.feature_settings: dict[str, bool | int | float] | None = dict(model.cfg.features)
        read = set(model.cfg.encoder.feature_names)
        #: Registry features this model does not read (said once at load, never dropped silently).
        self.unread_features: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in read)
        if self.unread_features:
            log.warning("model reads %d of %d summary features (%d not read, e.g. %s; see "
                        "MultimodalPredictor.unread_features)", len(read), len(FEATURE_NAMES),
                        len(self.unread_features), ", ".join(self.unread_features[-6:]))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", **kw: Any) -> MultimodalPredictor:
        """Load a checkpoint written by ``alertbroker train``."""
        model, meta = load_checkpoint(path, device, any_features=True)  # featurized with its own settings
        return cls(model, meta, device=device, **kw)

    def _host_photoz(self, host: torch.Tensor, host_mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model.photoz_from_host(host, host_mask, self.photoz_selection, self.joint_photoz)

    def gates(self, tokens: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``can_predict`` per alert: (class/anomaly gate, photo-z gate), bool (n,) each."""
        det = (tokens["lc"][..., LC_FIELDS.index("is_detection")] > 0.5) & tokens["lc_mask"]
        mags = (tokens["host"][..., 0] == HOST_KIND_MAG) & tokens["host_mask"]
        return det.sum(1) >= self.min_detections, mags.sum(1) >= self.min_host_bands

    def predict_tokens(self, tokens: dict[str, np.ndarray], log10_flux_scale: np.ndarray | None = None
                       ) -> Predictions:
        """Score token arrays (layout :mod:`broker.tokens`; ``img``/``img_mask`` too for an image model).

        ``log10_flux_scale`` (n,) is each alert's flux scale (the feature of that name): the forecast,
        made in flux-token units, is published in nJy, so without it there is no forecast.
        """
        cls_ok, z_ok = self.gates(tokens)
        n, k = len(cls_ok), len(self.class_ids)
        probs = np.full((n, k), np.nan, np.float32)
        photoz = np.full((n, len(PHOTOZ_COLUMNS)), np.nan, np.float32)
        anomaly = np.full(n, np.nan, np.float32)
        embedding = np.full((n, EMBEDDING_DIM), np.nan, np.float32)
        attr = None
        if self.attributor is not None:
            attr = np.full((n, len(ATTRIBUTION_TARGETS), len(ATTRIBUTION_PARTS)), np.nan, np.float32)
        forecast = np.full((n, *FORECAST_SHAPE), np.nan, np.float32)
        p_real = np.full(n, np.nan, np.float32) if self.model.real_bogus is not None else None
        physics = self.model.cfg.physics.score != "off"
        reads_z = self.model.reads_host_z  # the physics score and the luminosity prior read the photo-z median
        parts = {k: np.full(n, np.nan, np.float32) for k in ("anomaly_base", "anomaly_physics")} if physics else {}
        keys = TOKEN_KEYS + (IMAGE_KEYS if self.reads_images and "img" in tokens else ())
        todo = np.flatnonzero(cls_ok)
        cuda = self.device.type == "cuda"
        zi = np.flatnonzero(z_ok)
        host_z = np.empty((0, 0), np.float32)
        if len(zi):  # photo-z from the host tokens alone: the inputs its head was trained on
            host_z = self.photoz_cache(tokens["host"][zi], tokens["host_mask"][zi])
            photoz[zi] = host_z[:, : len(PHOTOZ_COLUMNS)]
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s : s + self.batch_size]
            tb, sub = {}, {k: tokens[k][idx] for k in keys}
            real = sub["lc_mask"].any(0)
            width = int(np.flatnonzero(real)[-1]) + 1 if real.any() else 0
            sub["lc"], sub["lc_mask"] = sub["lc"][:, :width], sub["lc_mask"][:, :width]
            for key in keys:
                t = torch.from_numpy(np.ascontiguousarray(sub[key]))
                tb[key] = t.pin_memory().to(self.device, non_blocking=True) if cuda else t
            hz = torch.from_numpy(photoz[idx, _Q50]).to(self.device) if reads_z else None
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model.infer(with_photoz=False, host_z=hz, **tb)  # photo-z: the host path above
                if attr is not None:
                    attr[idx, 0] = self.attributor.classification(tb, out["probs"])  # type: ignore[union-attr]
                p = self._consult(out["probs"].float(), tb, hz)
            probs[idx] = p.cpu().numpy()
            anomaly[idx] = out["anomaly"].float().cpu().numpy()
            for key, arr in parts.items():
                arr[idx] = out[key].float().cpu().numpy()
            embedding[idx] = out["embedding"].float().cpu().numpy()
            if p_real is not None:
                p_real[idx] = out["real"].float().cpu().numpy()
            if log10_flux_scale is not None:
                forecast[idx] = to_njy(out["forecast"].float().cpu().numpy(), log10_flux_scale[idx])
        if_class = np.full((n, len(PHOTOZ_COLUMNS)), np.nan, np.float32) if self.joint_photoz else None
        if len(zi):  # the classifier read the host-only median (above): the light curve is not counted twice
            lc_z = None if if_class is None else self._join_light_curve(photoz, zi, host_z, probs, tokens, if_class)
            if attr is not None:
                attr[zi, 1] = self.attributor.photoz(photoz[zi], self.device, host_z, lc_z)  # type: ignore[union-attr]
        read = np.asarray(tokens["img_mask"], np.float32) if "img" in keys else np.zeros(n, np.float32)
        return Predictions(probs=probs, photoz=photoz, anomaly=anomaly, embedding=embedding, attribution=attr,
                           forecast=forecast, real_bogus=p_real, cutouts_read=read, photoz_if_class=if_class,
                           extra=parts)

    def _join_light_curve(self, photoz: np.ndarray, zi: np.ndarray, host_z: np.ndarray, probs: np.ndarray,
                          tokens: dict[str, np.ndarray], if_class: np.ndarray) -> np.ndarray | None:  # fmt: skip
        """Host x light-curve photo-z for the classified alerts of ``zi``: into ``if_class`` for all of them,
        and, if the model joins, the class-marginal one (:func:`models.photoz_lc.class_share`, weighted by
        the served probability of the ``joins`` classes) into the served ``photoz`` of those whose top
        class is one of ``joins``.

        ``host_z`` (len(zi), 8 + 3M) are the cache's rows for ``zi``. Returns the light curve's own
        summary (len(zi), 8; NaN where not joined) for the attribution, None where nothing joins.
        """
        p = probs[zi]
        sel = np.flatnonzero(np.isfinite(p).all(1))  # the class gate is open: a light curve to read
        assert self.model.photoz_lc is not None
        join = bool(self.model.cfg.photoz_lc_join)
        rows = zi[sel]
        ps = p[sel]
        joined = self.joins[ps.argmax(1)]  # the top class is one it serves (sel's rows are finite)
        p_class = np.where(joined, ps[:, self.joins].sum(1), np.nan) if join else None
        if_class[rows], own, marginal = serve_light_curve(
            self.model.photoz_lc, tokens["feat"][rows], tokens["feat_mask"][rows], host_z[sel, len(PHOTOZ_COLUMNS) :],
            self.device, self.batch_size, own=join and self.attributor is not None, p_class=p_class)
        if marginal is None:
            return None
        photoz[rows[joined]] = marginal[joined]
        lc_own = np.full((len(zi), len(PHOTOZ_COLUMNS)), np.nan, np.float32)  # NaN where not joined
        if own is not None:
            lc_own[sel[joined]] = own[joined]
        return lc_own

    def _consult(self, p: torch.Tensor, tb: dict[str, torch.Tensor], hz: torch.Tensor | None) -> torch.Tensor:
        """The ensemble's probabilities (n, K): ``p`` (the primary's) averaged with the members' where consulted."""
        if not self.members:
            return p
        rows = None if self.consult_below is None else torch.nonzero(p.max(1).values < self.consult_below)[:, 0]
        if rows is None:
            return torch.stack([p, *(m.class_probs(host_z=hz, **tb).float() for m in self.members)]).mean(0)
        if len(rows):
            sub = {k: v[rows] for k, v in tb.items()}
            hs = None if hz is None else hz[rows]
            p = p.clone()
            p[rows] = torch.stack([p[rows], *(m.class_probs(host_z=hs, **sub).float() for m in self.members)]).mean(0)
        return p

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """Score a batch; ``features`` from :func:`broker.features.featurize` (computed if None)."""
        if features is None:
            from broker.features import FeatureConfig, featurize

            features = featurize(batch, FeatureConfig.from_settings(self.feature_settings))
        tokens = _tokens(features)
        if self.reads_images and batch.images is not None:  # stamps not read: the modality is absent
            tokens["img"], tokens["img_mask"] = batch.images.img, batch.images.mask
        return self.predict_tokens(tokens, _flux_scale(features))


def load_predictor(path: str | Path, device: str = "cpu", **kw: Any) -> MultimodalPredictor:
    """The predictor of a shipped model's name (:data:`SHIPPED_MODELS`), a checkpoint (``.pt``) or an
    ensemble manifest (``.json``, :mod:`models.ensemble`)."""
    path = SHIPPED_MODELS.get(str(path), path)
    if Path(path).suffix == ".json":
        from models.ensemble import load_ensemble  # imports this module

        return load_ensemble(path, device=device, **kw)
    return MultimodalPredictor.from_checkpoint(path, device=device, **kw)


def load_default(device: str = "cpu", threads: int = 1, **kw: Any) -> MultimodalPredictor:
    """The shipped default predictor (:data:`DEFAULT_WEIGHTS`)."""
    return load_predictor(DEFAULT_WEIGHTS, device=device, threads=threads, **kw)
