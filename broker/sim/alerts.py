"""Rubin alerts (schema 11.1) from simulated photometry, written as nightly Avro files.

One alert per detection inside the alert window.  Every diaSource (detection) and
diaForcedSource (every covering visit) is encoded once, column-wise
(:mod:`broker.sim.avro_columns`); an alert body is then a handful of byte slices:
``diaSourceId``, the triggering diaSource, ``prvDiaSources`` (earlier detections within
365 days), ``prvDiaForcedSources`` (forced photometry of earlier visits within 365 days),
the diaObject with per-band summaries as of this detection, and null or FITS cutouts
(:mod:`broker.sim.cutouts`: Rubin-like 30x30 stamps drawing the object's host).
"""

from __future__ import annotations

import datetime as dt
import gzip
import tarfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from broker.container_writer import ContainerWriter

from .avro_columns import encode_records, varint
from .dia_object import dia_object_columns

HISTORY_DAYS = 365.0
BAND_BYTES = np.array([b"u", b"g", b"r", b"i", b"z", b"y"])


@dataclass
class Photometry:
    """All simulated points, CSR by object (points of object ``i`` in ``off[i]:off[i+1]``,
    sorted by time).  Per-point arrays have the length ``off[-1]``."""

    off: np.ndarray
    visit: np.ndarray
    mjd: np.ndarray
    band: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    sci_flux: np.ndarray
    sci_err: np.ndarray
    template_flux: np.ndarray
    detected: np.ndarray
    object_id: np.ndarray  # per object
    ra: np.ndarray  # per object
    dec: np.ndarray  # per object
    extended: np.ndarray  # per object: on a galaxy
    # for cutouts (None: hostless, the template flux a point source): per point, dust-dimmed
    host_flux: np.ndarray | None = None  # host total flux in the point's band (nJy; 0 hostless)
    star_flux: np.ndarray | None = None  # quiescent point-source flux (nJy)
    host_sep: np.ndarray | None = None  # per object: offset from the host centre (arcsec; NaN)
    host_radius: np.ndarray | None = None  # per object: host half-light semi-major axis (arcsec)
    bogus: np.ndarray | None = None  # per object: artefact kind, index into BOGUS_KINDS (None: real)


PER_OBJECT = ("object_id", "ra", "dec", "extended", "host_sep", "host_radius", "bogus")


def record_fields(schema: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Fields of the record type ``name`` (diaSource, diaForcedSource, diaObject)."""
    for f in schema["fields"]:
        t = f["type"]
        for cand in (t if isinstance(t, list) else [t]):
            if isinstance(cand, dict):
                rec = cand["items"] if cand.get("type") == "array" else cand
                if isinstance(rec, dict) and rec.get("name", "").endswith(name):
                    return rec["fields"]
    raise KeyError(name)


def day_obs(mjd: np.ndarray) -> np.ndarray:
    """Rubin observing night (dayObs, as integer MJD of the local-noon rollover, UTC-12h)."""
    return np.floor(np.asarray(mjd) - 0.5).astype(np.int64)


def day_obs_str(night: int) -> str:
    """``YYYYMMDD`` of a dayObs integer."""
    return (dt.date(1858, 11, 17) + dt.timedelta(days=int(night))).strftime("%Y%m%d")


def _ids(ph: Photometry) -> tuple[np.ndarray, np.ndarray]:
    obj = np.repeat(np.arange(ph.off.size - 1), np.diff(ph.off))
    # unique per (visit, object) while fewer than 2**24 consecutive object ids
    src_id = ph.visit * (1 << 24) + ph.object_id[obj] % (1 << 24)
    return obj, src_id


def encode_sources(schema: dict[str, Any], ph: Photometry,
                   rng: np.random.Generator) -> tuple[bytes, np.ndarray, np.ndarray, bytes,
                                                      np.ndarray]:
    """Encode every detection as a diaSource and every point as a diaForcedSource.

    Returns ``(src_bytes, src_off, det_idx, forced_bytes, forced_off)``.
    """
    obj, src_id = _ids(ph)
    det = np.flatnonzero(ph.detected)
    o = obj[det]
    n = det.size
    snr = ph.flux[det] / ph.flux_err[det]
    pos_err = np.clip(0.7 / np.maximum(np.abs(snr), 1.0), 0.01, 0.3) / 3600.0
    ra = ph.ra[o] + rng.normal(0, 1, n) * pos_err / np.cos(np.radians(ph.dec[o]))
    dec = ph.dec[o] + rng.normal(0, 1, n) * pos_err
    mjd = ph.mjd[det]
    band_s = BAND_BYTES[ph.band[det]]
    fs = record_fields(schema, "diaSource")
    src, src_off = encode_records(fs, n, {
        "diaSourceId": src_id[det], "visit": ph.visit[det],
        "detector": rng.integers(0, 189, n), "diaObjectId": ph.object_id[o],
        "midpointMjdTai": mjd, "exposureTime": np.full(n, 30.0), "ra": ra,
        "raErr": pos_err * 3600, "dec": dec, "decErr": pos_err * 3600,
        "x": rng.uniform(0, 4072, n), "y": rng.uniform(0, 4000, n),
        "isNegative": snr < 0, "snr": snr, "psfFlux": ph.flux[det],
        "psfFluxErr": ph.flux_err[det], "psfNdata": np.full(n, 441),
        "apFlux": ph.flux[det] * rng.normal(1.0, 0.03, n), "apFluxErr": ph.flux_err[det] * 1.2,
        "scienceFlux": ph.sci_flux[det], "scienceFluxErr": ph.sci_err[det],
        "templateFlux": ph.template_flux[det], "templateFluxErr": ph.flux_err[det] * 0.3,
        "extendedness": np.where(ph.extended[o], rng.uniform(0.0, 0.3, n), 0.0),
        "reliability": rng.beta(20, 1, n), "band": band_s, "isDipole": np.zeros(n, bool),
        "timeProcessedMjdTai": mjd + 60.0 / 86400.0, "bboxSize": np.full(n, 25),
        "pixelFlags": np.zeros(n, bool), "pixelFlags_saturated": np.zeros(n, bool),
    })
    m = ph.mjd.size
    ff = record_fields(schema, "diaForcedSource")
    forced, forced_off = encode_records(ff, m, {
        "diaForcedSourceId": src_id + (1 << 60), "diaObjectId": ph.object_id[obj],
        "ra": ph.ra[obj], "dec": ph.dec[obj], "visit": ph.visit,
        "detector": rng.integers(0, 189, m), "psfFlux": ph.flux, "psfFluxErr": ph.flux_err,
        "midpointMjdTai": ph.mjd, "scienceFlux": ph.sci_flux, "scienceFluxErr": ph.sci_err,
        "band": BAND_BYTES[ph.band], "timeProcessedMjdTai": ph.mjd + 60.0 / 86400.0,
    })
    return src.tobytes(), src_off, det, forced.tobytes(), forced_off


def subset(ph: Photometry, objs: np.ndarray) -> Photometry:
    """The photometry of objects ``objs`` only (same layout)."""
    counts = np.diff(ph.off)[objs]
    off = np.zeros(objs.size + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    pts = np.repeat(ph.off[:-1][objs] - off[:-1], counts) + np.arange(int(off[-1]))
    kw = {f.name: getattr(ph, f.name)[objs if f.name in PER_OBJECT else pts] for f in fields(ph)
          if f.name != "off" and getattr(ph, f.name) is not None}
    return Photometry(off=off, **kw)


def concat(a: Photometry, b: Photometry) -> Photometry:
    """The objects of ``a`` followed by those of ``b`` (both with the same optional fields)."""
    kw = {}
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if (x is None) != (y is None):
            raise ValueError(f"Photometry.{f.name} is set in one part only")
        if f.name != "off" and x is not None:
            kw[f.name] = np.concatenate([x, y])
    return Photometry(off=np.concatenate([a.off, a.off[-1] + b.off[1:]]), **kw)


def write_alerts(schema: dict[str, Any], ph: Photometry, window: tuple[float, float],
                 out_dir: Path, rng: np.random.Generator, tar: bool = False,
                 cutouts: bool = False, log: Any = None) -> tuple[list[Path], np.ndarray]:
    """Write one Avro container per night of alerts in ``window``.

    Returns the written paths and, per object, the number of alerts issued.
    """
    from .cutouts import alert_cutouts

    obj_full, _ = _ids(ph)
    in_w = ph.detected & (ph.mjd >= window[0]) & (ph.mjd < window[1])
    n_alerts = np.bincount(obj_full[in_w], minlength=ph.off.size - 1)
    if not n_alerts.any():
        return [], n_alerts
    ph = subset(ph, np.flatnonzero(n_alerts > 0))
    src, src_off, det, forced, forced_off = encode_sources(schema, ph, rng)
    obj, src_id = _ids(ph)
    in_win = (ph.mjd[det] >= window[0]) & (ph.mjd[det] < window[1])
    alert_j = np.flatnonzero(in_win)  # index into det
    at = det[alert_j]  # point index
    if log:
        log(f"encoded {det.size} diaSources, {ph.mjd.size} forced sources; "
            f"building {at.size} alerts")
    dobj, dobj_off = encode_records(record_fields(schema, "diaObject"), at.size,
                                    dia_object_columns(ph, at))
    dobj_b = memoryview(dobj.tobytes())
    src_mv, forced_mv = memoryview(src), memoryview(forced)
    # earliest detection / point within HISTORY_DAYS, per alert (same object)
    t0 = float(ph.mjd.min()) if ph.mjd.size else 0.0
    key_pt = obj * 1e5 + (ph.mjd - t0)
    key_det = key_pt[det]
    lo_det = np.searchsorted(key_det, key_det[alert_j] - HISTORY_DAYS)
    lo_pt = np.searchsorted(key_pt, key_pt[at] - HISTORY_DAYS)
    nights = day_obs(ph.mjd[at])
    order = np.lexsort((src_id[at], ph.mjd[at]))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    sync = rng.bytes(16)
    no_cut = b"\x00\x00\x00"
    crng = rng.spawn(1)[0]  # cutouts draw from a child: the rest is the same with or without them
    for night in np.unique(nights):
        path = out_dir / f"alerts_{day_obs_str(night)}.avro"
        with open(path, "wb") as fh:
            w = ContainerWriter(fh, schema, sync=sync)
            in_night = order[nights[order] == night]
            cuts = alert_cutouts(ph, at[in_night], crng) if cutouts else None
            for a in in_night:
                j, p = alert_j[a], at[a]
                nprv, nfs = j - lo_det[a], p - lo_pt[a]
                parts: list[bytes | memoryview] = [varint(int(src_id[p])) + b"\x00\x00",
                                                   src_mv[src_off[j]:src_off[j + 1]]]
                if nprv:
                    parts += [b"\x02" + varint(int(nprv)), src_mv[src_off[lo_det[a]]:src_off[j]],
                              b"\x00"]
                else:
                    parts.append(b"\x02\x00")
                if nfs:
                    parts += [b"\x02" + varint(int(nfs)),
                              forced_mv[forced_off[lo_pt[a]]:forced_off[p]], b"\x00"]
                else:
                    parts.append(b"\x02\x00")
                cut = next(cuts) if cuts is not None else no_cut
                parts += [b"\x02", dobj_b[dobj_off[a]:dobj_off[a + 1]], b"\x00\x00" + cut]
                w.write(parts)
            w.flush()
        if tar:
            tpath = path.with_suffix(".tar.gz")
            with tarfile.open(tpath, "w:gz", compresslevel=1) as tf:
                tf.add(path, arcname=path.name)
            path.unlink()
            path = tpath
        paths.append(path)
        if log:
            log(f"wrote {path.name}: {(nights == night).sum()} alerts")
    return paths, n_alerts


def open_night(path: Path) -> Any:
    """Open a nightly archive (``.avro`` or ``.tar.gz``) as a binary file object."""
    if str(path).endswith(".tar.gz"):
        tf = tarfile.open(path, "r:gz")
        member = tf.getmembers()[0]
        return tf.extractfile(member)
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")
