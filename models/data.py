"""Training data: columnar training tables and the DC2 photo-z files -> model tokens.

Training tables follow :mod:`broker.sim.training` (one row per object, list columns
``mjd band flux flux_err is_detection``, ``host_mag_*``/``host_magerr_*``,
``host_sep_arcsec``, ``class_code``, ``class_name``, ``redshift``, ``split``). They
are turned into :class:`~broker.batch.AlertBatch` objects and featurized with
:func:`broker.features.featurize`, exactly as alerts are in the stream; the
reference time is the last detection kept (the alert that would trigger). An
early-epoch view keeps only the rows up to the ``k``-th detection.

The DC2 files (``pz-rail-base``: ``rail/examples_data/testdata``) give host tokens only
(ugrizy magnitudes with errors; ``99`` = undetected -> masked).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from broker.batch import AlertBatch, AlertTable, LightCurves
from broker.features import FeatureConfig, Features, HostMatch, featurize, host_tokens
from broker.tokens import FEAT_FIELDS, LC_FIELDS

BANDS_STR = "ugrizy"
_BAND_IDX = {b: i for i, b in enumerate(BANDS_STR)}


@dataclass
class TokenData:
    """Tokens plus targets for ``n`` examples.

    Attributes
    ----------
    tokens : dict of str -> ndarray
        ``lc, lc_mask, host, host_mask, feat, feat_mask`` (layouts in :mod:`broker.tokens`).
    label : ndarray of int64 (n,)
        Class index into the taxonomy, ``-1`` when unknown / not in the taxonomy.
    code : ndarray of int64 (n,)
        Original class code (``-1`` unknown).
    z : ndarray of float64 (n,)
        True redshift, NaN when unknown.
    n_det : ndarray of int64 (n,)
        Detections among the light-curve tokens.
    summary : ndarray (n, F) or None
        Raw summary features (for tree-based peers).
    scene : dict of str -> ndarray (n,), or None
        What each example's cutouts show (:mod:`models.cutout_data`), for image models.
    real : ndarray of float32 (n,) or None
        1 for a real source, 0 for an artefact (real/bogus target).
    """

    tokens: dict[str, np.ndarray]
    label: np.ndarray
    code: np.ndarray
    z: np.ndarray
    n_det: np.ndarray
    summary: np.ndarray | None = None
    scene: dict[str, np.ndarray] | None = None
    real: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, idx: np.ndarray) -> TokenData:
        """Subset of rows ``idx``."""
        return TokenData({k: v[idx] for k, v in self.tokens.items()}, self.label[idx],
                         self.code[idx], self.z[idx], self.n_det[idx],
                         None if self.summary is None else self.summary[idx],
                         None if self.scene is None else {k: v[idx] for k, v in self.scene.items()},
                         None if self.real is None else self.real[idx])


def concat(parts: list[TokenData]) -> TokenData:
    """Row-wise concatenation (token sets padded to the widest)."""
    toks: dict[str, np.ndarray] = {}
    for key in parts[0].tokens:
        width = max(p.tokens[key].shape[1] for p in parts)
        arrs = []
        for p in parts:
            a = p.tokens[key]
            pad = [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            arrs.append(np.pad(a, pad))
        toks[key] = np.concatenate(arrs)
    summ = None if any(p.summary is None for p in parts) else np.concatenate([p.summary for p in parts])
    label, code, z, n_det = (np.concatenate([getattr(p, f) for p in parts]) for f in ("label", "code", "z", "n_det"))
    scenes = [p.scene for p in parts if p.scene is not None]
    scene = {k: np.concatenate([sc[k] for sc in scenes]) for k in scenes[0]} if len(scenes) == len(parts) else None
    reals = [p.real for p in parts if p.real is not None]
    real = np.concatenate(reals) if len(reals) == len(parts) else None
    return TokenData(toks, label, code, z, n_det, summary=summ, scene=scene, real=real)


def table_batch(df: pl.DataFrame, max_detections: int | np.ndarray | None = None) -> AlertBatch:
    """Alert batch from a training table (rows after the ``k``-th detection dropped).

    ``max_detections`` is one ``k`` for all objects or an array (n,) of ``k``.
    """
    lens = df["mjd"].list.len().fill_null(0).to_numpy().astype(np.int64)
    obj = np.repeat(np.arange(len(lens)), lens)
    mjd = df["mjd"].explode().drop_nulls().to_numpy().astype(np.float64)
    band = np.array([_BAND_IDX.get(b, -1) for b in df["band"].explode().drop_nulls().to_list()],
                    np.int8)
    flux = df["flux"].explode().drop_nulls().to_numpy().astype(np.float64)
    err = df["flux_err"].explode().drop_nulls().to_numpy().astype(np.float64)
    det = df["is_detection"].explode().drop_nulls().to_numpy().astype(bool)
    off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    keep = np.ones(len(mjd), bool)
    if max_detections is not None:
        cum = np.cumsum(det) - det
        base = np.concatenate([[0], np.cumsum(det)])[off[:-1]]
        kmax = np.broadcast_to(np.asarray(max_detections), (len(lens),))
        keep = (cum - base[obj]) < kmax[obj]
    obj, mjd, band, flux, err, det = (a[keep] for a in (obj, mjd, band, flux, err, det))
    counts = np.bincount(obj, minlength=len(lens))
    off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(counts, out=off[1:])
    last_any = np.full(len(lens), -np.inf)
    np.maximum.at(last_any, obj, mjd)
    ref = np.where(np.isfinite(last_any), last_any, np.nan)
    if det.any():
        last_det = np.full(len(lens), -np.inf)
        np.maximum.at(last_det, obj[det], mjd[det])
        ref = np.where(np.isfinite(last_det), last_det, ref)
    n = len(lens)
    cols = {"diaSourceId": np.arange(n, dtype=np.int64),
            "diaObjectId": df["diaObjectId"].to_numpy().astype(np.int64),
            "ra": df["ra"].to_numpy().astype(np.float64), "dec": df["dec"].to_numpy().astype(np.float64),
            "mjd": ref, "band": np.full(n, -1, np.int8), "schema_id": np.zeros(n, np.int32)}
    lcs = LightCurves(offsets=off, mjd=mjd, band=band, flux=flux, flux_err=err, is_detection=det)
    return AlertBatch(table=AlertTable(cols), lightcurves=lcs)


def table_hosts(df: pl.DataFrame) -> HostMatch:
    """Host match (id, separation, ugrizy magnitudes) from the ``host_*`` columns."""
    n = df.height

    def col(name: str) -> np.ndarray:
        if name not in df.columns:
            return np.full(n, np.nan)
        return df[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

    hid = (df["host_galaxy_id"].fill_null(-1).to_numpy().astype(np.int64)
           if "host_galaxy_id" in df.columns else np.full(n, -1, np.int64))
    mag = np.stack([col(f"host_mag_{b}") for b in BANDS_STR], 1).astype(np.float32)
    err = np.stack([col(f"host_magerr_{b}") for b in BANDS_STR], 1).astype(np.float32)
    return HostMatch(host_id=hid, ra=col("ra"), dec=col("dec"), sep_arcsec=col("host_sep_arcsec"),
                     dlr=np.full(n, np.nan), mag=mag, magerr=err)


def table_features(df: pl.DataFrame, max_detections: int | np.ndarray | None = None,
                   config: FeatureConfig | None = None) -> Features:
    """Featurize a training table like the stream does, with its own host columns."""
    return _with_hosts(featurize(table_batch(df, max_detections), config), df)


def _with_hosts(feats: Features, df: pl.DataFrame) -> Features:
    """``feats`` with the host tokens of the table's own host columns."""
    htok, hmask = host_tokens(table_hosts(df))
    return replace(feats, host=htok, host_mask=hmask)


def table_tokens(df: pl.DataFrame, class_ids: tuple[int, ...],
                 max_detections: int | np.ndarray | None = None,
                 config: FeatureConfig | None = None, scenes: np.random.Generator | None = None,
                 augment: Callable[[AlertBatch], AlertBatch] | None = None) -> TokenData:
    """:class:`TokenData` of a training table for the taxonomy ``class_ids``.

    ``augment`` transforms the light curves before they are featurized (:mod:`models.augment`).

    With ``scenes`` (a generator), each example also gets its cutout scene and real/bogus target
    (:mod:`models.cutout_data`; a ``bogus_kind`` column > 0 marks an artefact).
    """
    batch = table_batch(df, max_detections)
    if augment is not None:
        batch = augment(batch)
    f = _with_hosts(featurize(batch, config), df)
    code = df["class_code"].fill_null(-1).to_numpy().astype(np.int64)
    lut = {c: i for i, c in enumerate(class_ids)}
    label = np.array([lut.get(int(c), -1) for c in code], np.int64)
    z = df["redshift"].cast(pl.Float64).fill_null(np.nan).to_numpy() if "redshift" in df.columns \
        else np.full(df.height, np.nan)
    toks = {"lc": f.lc, "lc_mask": f.lc_mask, "host": f.host, "host_mask": f.host_mask,
            "feat": f.feat, "feat_mask": f.feat_mask}
    scene = real = None
    if scenes is not None:
        from models.cutout_data import table_scenes

        scene = table_scenes(df, batch, scenes)
        real = (scene["bogus"] == 0).astype(np.float32)
    return TokenData(toks, label, code, z, n_detections(toks), f.summary, scene, real)


def n_detections(tokens: dict[str, np.ndarray]) -> np.ndarray:
    """Detections among the real light-curve tokens, (n,)."""
    return ((tokens["lc"][..., LC_FIELDS.index("is_detection")] > 0.5) & tokens["lc_mask"]).sum(1)


def dc2_path(name: str) -> Path:
    """Path of a ``pz-rail-base`` test file, e.g. ``test_dc2_training_9816``."""
    spec = importlib.util.find_spec("rail")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        for ext in (".pq", ".hdf5"):
            p = Path(root) / "examples_data" / "testdata" / f"{name}{ext}"
            if p.exists():
                return p
    raise FileNotFoundError(f"{name} not found: pip install pz-rail-base")


def read_photometry(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a DC2 photometry file (Parquet or RAIL HDF5 ``photometry`` group)."""
    path = Path(path)
    if path.suffix == ".hdf5":
        import h5py

        with h5py.File(path, "r") as h:
            g = h["photometry"]
            return {k: np.asarray(g[k]) for k in g}
    return {k: v.to_numpy() for k, v in pl.read_parquet(path).to_dict().items()}


def photometry_tokens(cols: dict[str, np.ndarray], n_features: int) -> TokenData:
    """Host-only :class:`TokenData` from ``mag_{b}_lsst``/``mag_err_{b}_lsst``/``redshift``."""
    n = len(cols["redshift"])
    mag = np.stack([cols[f"mag_{b}_lsst"] for b in BANDS_STR], 1).astype(np.float32)
    err = np.stack([cols[f"mag_err_{b}_lsst"] for b in BANDS_STR], 1).astype(np.float32)
    nan = np.full(n, np.nan)
    match = HostMatch(host_id=np.arange(n, dtype=np.int64), ra=nan, dec=nan, sep_arcsec=nan,
                      dlr=nan, mag=mag, magerr=err)
    htok, hmask = host_tokens(match)
    toks = {"lc": np.zeros((n, 0, len(LC_FIELDS)), np.float32), "lc_mask": np.zeros((n, 0), bool),
            "host": htok, "host_mask": hmask,
            "feat": np.zeros((n, 0, len(FEAT_FIELDS)), np.float32), "feat_mask": np.zeros((n, 0), bool)}
    neg = np.full(n, -1, np.int64)
    return TokenData(toks, neg, neg.copy(), cols["redshift"].astype(np.float64), np.zeros(n, np.int64))


def data_hash(*arrays: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) over the bytes of the arrays."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
