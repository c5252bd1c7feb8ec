"""``simulate()``: a labelled Rubin alert stream with hosts and truth.

Output directory layout::

    OUT/
      alerts/alerts_YYYYMMDD.avro   one Avro container per night (dayObs), schema 11.1
                                    in the header; .tar.gz instead with ``tar=True``
      truth.parquet                 one row per object: ids, class, redshift, host, params
                                    (and artefact objects, with ``bogus_fraction``)
      training/{train,validation,test}.parquet   light curves + labels (training.py)
      hosts/                        HATS catalog of hosts and decoy galaxies
      summary.json
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from . import bogus as bg
from . import conditions as oc_mod
from . import generators as gz
from . import models_rotator as rot
from . import models_transient as mt
from . import taxonomy as tx
from .alerts import day_obs, write_alerts
from .cadence import Cadence, in_ddf, load_opsim, scatter_in_fov, synthetic_cadence, visits_covering
from .hosts import build_catalog, draw_hosts, galaxy_pool, galaxy_shapes, offset_positions, write_hats
from .photometry import comoving_volume_pdf
from .render import photometry
from .training import assign_splits, light_curve_frame, write_training

HISTORY_DAYS = 365.0
DEFAULT_START_OFFSET = 400.0  # days after the OpSim start, so a year of history exists


@dataclass
class SimulationSummary:
    """What a simulation produced."""

    out_dir: str
    seed: int
    cadence: str
    start_mjd: float
    nights: int
    n_objects: int
    n_points: int
    n_detections: int
    n_alerts: int
    n_bogus: int = 0  # artefact objects, on top of n_objects
    alert_files: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    generator_counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    alerts_per_s: float = 0.0


def galactic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Galactic latitude (deg) of ICRS positions (deg)."""
    ra_ngp, dec_ngp = np.radians(192.85948), np.radians(27.12825)
    r, d = np.radians(ra), np.radians(dec)
    sinb = np.sin(d) * np.sin(dec_ngp) + np.cos(d) * np.cos(dec_ngp) * np.cos(r - ra_ngp)
    return np.degrees(np.arcsin(np.clip(sinb, -1.0, 1.0)))


def _busiest_night(cad: Cadence, t_lo: float) -> float:
    nights = day_obs(cad.mjd)
    sel = (cad.mjd >= t_lo) & (cad.mjd < t_lo + 30)
    u, c = np.unique(nights[sel], return_counts=True)
    return float(u[np.argmax(c)] + 0.5) if u.size else t_lo


def _sample_redshift(rng: np.random.Generator, code: int, n: int) -> np.ndarray:
    zmax = mt.SPEC[code][8] if code in mt.SPEC else (tx.BY_CODE[code].zmax or 3.0)
    grid = np.linspace(0.01, zmax, 2000)
    cdf = np.cumsum(comoving_volume_pdf(grid))
    return np.interp(rng.uniform(0, 1, n) * cdf[-1], cdf, grid)


def simulate(n_objects: int, seed: int, out_dir: str | Path, start_mjd: float | None = None,
             nights: int = 1, cadence: str = "auto", tar: bool = False, cutouts: bool = False,
             progress: bool = True, log: Callable[[str], None] | None = None,
             generators: str | Sequence[str] | None = None,
             conditions: oc_mod.Conditions | None = None,
             class_fractions: Mapping[str, float] | None = None,
             bogus_fraction: float = 0.0) -> SimulationSummary:
    """Simulate ``n_objects`` objects and write alerts, truth, training tables and hosts.

    Parameters
    ----------
    n_objects : int
        Number of simulated objects (each yields zero or more alerts).
    seed : int
        Random seed; outputs are identical for equal arguments.
    out_dir : str or Path
        Output directory (created).
    start_mjd : float, optional
        Start of the alert window; default: the busiest night ~400 days into OpSim.
    nights : int
        Length of the alert window in nights.
    cadence : {"auto", "opsim", "synthetic"}
        Visit table; ``auto`` uses OpSim when available, else the synthetic cadence.
    tar, cutouts : bool
        Bundle each night as ``.tar.gz``; attach FITS cutouts.
    progress : bool
        Print stage timings to stderr.
    log : callable, optional
        Receives the progress messages instead of stderr.
    generators : str or sequence of str, optional
        Light-curve generators (:mod:`broker.sim.generators`), e.g. ``"templates,redback"``;
        each object gets one that can make its class.  Default: ``templates`` only.
        Without ``templates``, classes no listed generator makes are not simulated.
    conditions : Conditions, optional
        Observing-condition randomisation (:mod:`broker.sim.conditions`); default: none.
    class_fractions : mapping of str to float, optional
        Object fraction of some classes by name (e.g. ``{"Rotator": 0.5}``); the other
        classes share the rest in their usual proportions.
    bogus_fraction : float
        Adds ``round(bogus_fraction * n_objects)`` artefact objects (:mod:`broker.sim.bogus`) to
        the alerts and the truth, not to the training tables; 0 leaves the output unchanged.
    """
    if n_objects < 1:
        raise ValueError("n_objects must be at least 1")
    if bogus_fraction < 0:
        raise ValueError(f"bogus_fraction must be >= 0, got {bogus_fraction}")
    t_start = time.perf_counter()
    if log is None:
        def log(msg: str) -> None:
            if progress:
                print(f"[simulate {time.perf_counter() - t_start:7.2f}s] {msg}", file=sys.stderr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cad = _get_cadence(cadence, start_mjd, nights, seed)
    if start_mjd is None:
        start_mjd = _busiest_night(cad, float(cad.mjd[0]) + DEFAULT_START_OFFSET) \
            if cad.source == "opsim" else float(np.floor(cad.mjd[-1]) - nights + 0.5)
    w_lo, w_hi = float(start_mjd), float(start_mjd) + nights
    win = cad.window(w_lo, w_hi)
    if win.size == 0:
        raise ValueError(f"no visits between MJD {w_lo} and {w_hi}")
    log(f"cadence {cad.source}: {len(cad)} visits, {win.size} in the alert window")

    gens = {name: gz.get(name) for name in gz.parse(generators)}
    cond = conditions or oc_mod.Conditions()
    freq = np.array(tx.frequencies(gens))
    if "templates" not in gens:  # only the classes some listed generator can make
        freq = freq * np.isin(tx.codes(), list(gz.class_coverage(gens)))
        freq = freq / freq.sum()
    if class_fractions:
        freq = np.array(tx.with_fractions(freq.tolist(),
                                        {tx.code_of(k): v for k, v in class_fractions.items()}))
    codes = np.array(tx.codes())[rng.choice(len(tx.CLASSES), n_objects, p=freq)]
    order = np.argsort(codes, kind="stable")  # group by class
    codes = codes[order]
    gen_of = gz.assign(rng, codes, gens)  # no draw with a single generator
    rank = np.array([list(gens).index(g) for g in gen_of])
    order = np.lexsort((rank, codes))  # group by (class, generator); identity for one generator
    codes, gen_of = codes[order], gen_of[order]
    # positions: where the survey looks during the window
    # one entry per distinct pointing (so deep-drilling sequences are not over-weighted)
    _, first = np.unique(np.round(cad.ra[win], 1) * 1000 + np.round(cad.dec[win], 1),
                         return_index=True)
    fields = win[np.sort(first)]
    # stars crowd towards the Galactic plane; dust hides galaxies behind it
    b_abs = np.abs(galactic_latitude(cad.ra[fields], cad.dec[fields]))
    w_star = 0.1 + np.exp(-b_abs / 10.0)
    w_gal = 1.0 - 0.8 * np.exp(-b_abs / 8.0)
    xgal = np.array([tx.BY_CODE[c].extragalactic for c in codes])
    v = np.where(xgal, rng.choice(fields, n_objects, p=w_gal / w_gal.sum()),
                 rng.choice(fields, n_objects, p=w_star / w_star.sum()))
    ra, dec = scatter_in_fov(rng, cad, v)
    hist = cad.window(w_lo - HISTORY_DAYS, w_hi)
    oc_mod.place_in_ddf(rng, cond.ddf_fraction, cad, (win, hist), ra, dec)  # no draw at 0
    obj_id = (np.int64(seed % 100000) * 10**9 + np.arange(1, n_objects + 1)).astype(np.int64)

    # hosts for extragalactic classes (transient z = host z)
    ix = np.flatnonzero(xgal)
    z = np.full(n_objects, np.nan)
    host_row = np.full(n_objects, -1)
    for c in np.unique(codes[ix]):
        sel = ix[codes[ix] == c]
        host_row[sel] = draw_hosts(rng, _sample_redshift(rng, int(c), sel.size))
    pool = galaxy_pool()
    z[ix] = pool["z_true"].to_numpy()[host_row[ix]]
    a, b, pa = galaxy_shapes(rng, pool["mag_r"].to_numpy()[host_row[ix]], z[ix])
    nuclear = np.isin(codes[ix], [2243, 2332])
    t_ra, t_dec = offset_positions(rng, ra[ix], dec[ix], a, b, pa, nuclear)
    host_ra, host_dec = ra[ix].copy(), dec[ix].copy()
    ra[ix], dec[ix] = t_ra % 360.0, t_dec
    sep = np.full(n_objects, np.nan)
    sep[ix] = np.hypot((t_ra - host_ra) * np.cos(np.radians(host_dec)), t_dec - host_dec) * 3600
    log(f"placed {n_objects} objects, {ix.size} with hosts")
    obj_cond = oc_mod.draw(rng, cond, galactic_latitude(ra, dec))

    off, vis = visits_covering(cad, hist, ra, dec)
    log(f"matched {vis.size} visits ({vis.size / max(n_objects, 1):.0f} per object)")

    ph, params = photometry(rng, cad, codes, gen_of, gens, off, vis, z, host_row, xgal, pool, a,
                            (w_lo, w_hi), obj_cond, log)
    ph.object_id, ph.ra, ph.dec = obj_id, ra, dec
    ph.host_sep, ph.host_radius = sep, np.full(n_objects, np.nan)
    ph.host_radius[ix] = a  # the cutouts draw the host the catalog describes
    log(f"photometry: {ph.detected.sum()} detections")
    n_bogus, ph_all = round(bogus_fraction * n_objects), ph
    if n_bogus:  # after the real objects' draws, so those are what a run without them draws
        art = bg.artefacts(rng, cad, fields, hist, (w_lo, w_hi), n_bogus, int(obj_id[-1]) + 1)
        ph_all = bg.with_artefacts(ph, art)
        log(f"{n_bogus} artefact objects: {art.ph.detected.sum()} detections")

    paths, n_alerts = write_alerts(_schema(), ph_all, (w_lo, w_hi), out / "alerts", rng, tar=tar,
                                   cutouts=cutouts, log=log)
    n_alerts, n_alerts_bogus = n_alerts[:n_objects], n_alerts[n_objects:]
    t_alerts = time.perf_counter()

    cat = build_catalog(rng, host_row[ix], host_ra, host_dec, (a, b, pa), ra, dec)
    write_hats(cat, out / "hosts")
    split = assign_splits(rng, codes)
    gid = pool["galaxy_id"].to_numpy()
    host_id = np.where(host_row >= 0, gid[np.maximum(host_row, 0)], -1)
    meta = pl.DataFrame({
        "diaObjectId": obj_id, "class_code": codes.astype(np.int32),
        "class_name": [tx.name_of(int(c)) for c in codes], "split": split, "ra": ra,
        "dec": dec, "redshift": z, "generator": gen_of.astype(str), "host_galaxy_id": host_id,
        "host_sep_arcsec": sep.astype(np.float32),
    }).with_columns(pl.col("redshift").fill_nan(None),
                    pl.when(pl.col("host_galaxy_id") >= 0).then(pl.col("host_galaxy_id"))
                    .alias("host_galaxy_id"), pl.col("host_sep_arcsec").fill_nan(None))
    hostmag = {}
    for bnd in "ugrizy":
        for pre, col in (("host_mag_", "mag_"), ("host_magerr_", "magerr_")):
            arr = np.full(n_objects, np.nan, dtype=np.float32)
            arr[ix] = pool[col + bnd].to_numpy()[host_row[ix]]
            hostmag[pre + bnd] = arr
    meta = meta.with_columns(pl.DataFrame(hostmag).with_columns(pl.all().fill_nan(None)))
    meta = meta.with_columns(pl.Series("n_alerts", n_alerts.astype(np.int32)))
    truth = pl.concat([meta.select("diaObjectId", "class_code", "class_name", "split", "redshift",
                           "host_galaxy_id", "ra", "dec", "n_alerts"),
               pl.DataFrame({"n_detections": np.bincount(
                   np.repeat(np.arange(n_objects), np.diff(ph.off)), weights=ph.detected,
                   minlength=n_objects).astype(np.int32), "params_json": params,
                   "generator": gen_of.astype(str), "mwebv": obj_cond.mwebv,
                   "noise_scale": obj_cond.noise_scale,
                   "precovery_days": obj_cond.precovery_days,
                   "missing_bands": obj_cond.missing_bands(), "ddf": in_ddf(ra, dec),
                   **rot.truth_columns(codes, params)})], how="horizontal")
    if n_bogus:
        truth = bg.truth_with_artefacts(truth, art, n_alerts_bogus)
    truth.write_parquet(out / "truth.parquet")
    curves = light_curve_frame(ph.off, ph.mjd, ph.band, ph.flux, ph.flux_err, ph.detected)
    split_counts = write_training(out / "training", meta, curves)
    log("wrote truth, training tables and HATS hosts")

    elapsed = time.perf_counter() - t_start
    summ = SimulationSummary(
        out_dir=str(out), seed=seed, cadence=cad.source, start_mjd=w_lo, nights=nights,
        n_objects=n_objects, n_points=int(ph_all.off[-1]),
        n_detections=int(ph_all.detected.sum()), n_bogus=n_bogus,
        n_alerts=int(n_alerts.sum() + n_alerts_bogus.sum()), alert_files=[p.name for p in paths],
        class_counts={tx.name_of(int(c)): int((codes == c).sum()) for c in np.unique(codes)}
        | ({tx.BOGUS_NAME: n_bogus} if n_bogus else {}),
        generator_counts={g: int((gen_of == g).sum()) for g in gens},
        split_counts=split_counts, elapsed_s=round(elapsed, 3),
        alerts_per_s=round(float(n_alerts.sum() + n_alerts_bogus.sum())
                           / max(t_alerts - t_start, 1e-9), 1))
    (out / "summary.json").write_text(json.dumps(asdict(summ), indent=2))
    log(f"done: {summ.n_alerts} alerts in {elapsed:.1f}s")
    return summ


def _get_cadence(kind: str, start_mjd: float | None, nights: int, seed: int) -> Cadence:
    if kind in ("auto", "opsim"):
        try:
            return load_opsim()
        except FileNotFoundError:
            if kind == "opsim":
                raise
            print("OpSim table not found; using the synthetic cadence", file=sys.stderr)
    t0 = 61000.5 if start_mjd is None else start_mjd
    return synthetic_cadence(t0 - HISTORY_DAYS, HISTORY_DAYS + nights, seed)


def _schema() -> dict:
    import copy

    import lsst.alert.packet as lap

    return copy.deepcopy(lap.Schema.from_file(lap.get_path_to_latest_schema()).definition)
