"""Inputs of ``bench pipeline``: schema-11.1 wire alerts with a chosen history length.

Each simulated object has ``P`` visits spread over a year in random bands; its alert is issued at
the last visit, so it carries ``P - 1`` forced-photometry rows (``prvDiaForcedSources``, every
earlier visit) and the earlier detections (``prvDiaSources``). The history length is the number
of rows in those two arrays. The rows are encoded column-wise by the simulator's own encoder
(:func:`broker.sim.alerts.encode_sources`, :func:`broker.sim.avro_columns.encode_records`) and
assembled into alert bodies the way :func:`broker.sim.alerts.write_alerts` does.

Light curves come in six kinds (the labels of the peer's classifier): fast and slow Bazin
transients (:func:`broker.features.synth.bazin_flux`, the light-curve shape the fits model),
short- and long-period sinusoids, a linear drift, and a constant source.
"""

from __future__ import annotations

import numpy as np

from broker.features.synth import bazin_flux
from broker.sim.alerts import Photometry, dia_object_columns, encode_sources, record_fields
from broker.sim.avro_columns import encode_records, varint
from broker.wire import frame, schema_id_for_version

#: Labels of the simulated kinds of light curve.
KINDS = ("fast_transient", "slow_transient", "short_period", "long_period", "drift", "constant")
#: Fraction of visits that are detections (a detection also has its forced row).
DETECTED_FRACTION = 0.3


def _schema() -> dict:
    from broker.sim.core import _schema as latest

    return latest()


def _curves(rng: np.random.Generator, kind: np.ndarray, obj: np.ndarray, t: np.ndarray,
            band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Noiseless difference flux and its error (nJy) of each visit."""
    n = kind.size
    amp = rng.uniform(500.0, 20000.0, n)[obj]
    t_lo = t.min() if t.size else 0.0
    t0 = t_lo + rng.uniform(100.0, 330.0, n)[obj]
    colour = 1.0 - 0.1 * band
    k = kind[obj]
    rise = np.where(k == 0, rng.uniform(1.0, 4.0, n)[obj], rng.uniform(5.0, 15.0, n)[obj])
    fall = np.where(k == 0, rng.uniform(8.0, 25.0, n)[obj], rng.uniform(30.0, 90.0, n)[obj])
    period = np.where(k == 2, rng.uniform(0.3, 3.0, n)[obj], rng.uniform(10.0, 60.0, n)[obj])
    phase = rng.uniform(0.0, 2 * np.pi, n)[obj]
    flux = np.select(
        [k <= 1, (k == 2) | (k == 3), k == 4],
        [
            bazin_flux(t, amp * colour, 0.0, t0, rise, fall),
            0.3 * amp * colour * np.sin(2 * np.pi * (t - t_lo) / period + phase),
            amp * (t - t_lo) / 365.0 - 0.5 * amp,
        ],
        0.0,
    )
    err = 0.05 * amp * rng.uniform(0.7, 1.3, t.size) + 20.0
    return flux, err


def make_alerts(n: int, history: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """``n`` wire-format alerts of about ``history`` history rows each, and their kind labels.

    Parameters
    ----------
    n : int
        Number of alerts (one per object).
    history : int
        Rows of ``prvDiaSources`` plus ``prvDiaForcedSources`` per alert (within a row or two).
    seed : int
        Random seed; a different seed gives different objects and ids.

    Returns
    -------
    list of bytes, ndarray of int64
        Messages (Confluent wire format, schema 11.1) and the index into :data:`KINDS` per alert.
    """
    rng = np.random.default_rng(seed)
    schema = _schema()
    visits = max(2, round(history / (1.0 + DETECTED_FRACTION)) + 1)
    off = np.arange(n + 1, dtype=np.int64) * visits
    obj = np.repeat(np.arange(n), visits)
    t = np.sort(rng.uniform(61000.0, 61365.0, (n, visits)), axis=1).ravel()
    band = rng.integers(0, 6, t.size)
    kind = rng.integers(0, len(KINDS), n)
    true, err = _curves(rng, kind, obj, t, band)
    flux = true + rng.normal(0.0, 1.0, t.size) * err
    detected = rng.random(t.size) < DETECTED_FRACTION
    last = off[1:] - 1
    detected[last] = True  # the alert's own source is a detection
    template = rng.uniform(0.0, 5000.0, n)[obj]
    ph = Photometry(off=off, visit=np.arange(t.size, dtype=np.int64) + 10**8 * (seed + 1), mjd=t,
                    band=band, flux=flux, flux_err=err, sci_flux=flux + template, sci_err=err * 1.05,
                    template_flux=template, detected=detected,
                    object_id=np.arange(n, dtype=np.int64) + 10**9 * (seed + 1),
                    ra=rng.uniform(0.0, 360.0, n), dec=np.degrees(np.arcsin(rng.uniform(-1.0, 0.3, n))),
                    extended=rng.random(n) < 0.5)  # fmt: skip
    src, src_off, det, forced, forced_off = encode_sources(schema, ph, rng)
    dobj, dobj_off = encode_records(record_fields(schema, "diaObject"), n, dia_object_columns(ph, last))
    dobj_b, src_mv, forced_mv = memoryview(dobj.tobytes()), memoryview(src), memoryview(forced)
    det_of = np.searchsorted(det, last)  # index of each alert's own source among the detections
    sid = schema_id_for_version(11, 1)
    out = []
    for i in range(n):
        j, p = int(det_of[i]), int(last[i])
        lo_det = int(np.searchsorted(det, off[i]))
        src_id = ph.visit[p] * (1 << 24) + ph.object_id[i] % (1 << 24)
        parts: list[bytes | memoryview] = [varint(int(src_id)) + b"\x00\x00", src_mv[src_off[j] : src_off[j + 1]]]
        nprv, nfs = j - lo_det, p - int(off[i])
        parts += [b"\x02" + varint(nprv), src_mv[src_off[lo_det] : src_off[j]], b"\x00"] if nprv else [b"\x02\x00"]
        parts += (
            [b"\x02" + varint(nfs), forced_mv[forced_off[off[i]] : forced_off[p]], b"\x00"] if nfs else [b"\x02\x00"]
        )
        parts += [b"\x02", dobj_b[dobj_off[i] : dobj_off[i + 1]], b"\x00\x00" + b"\x00\x00\x00"]
        out.append(frame(sid, b"".join(parts)))
    return out, kind
