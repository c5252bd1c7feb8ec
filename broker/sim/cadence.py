"""Rubin observing cadence: the OpSim baseline visit table, or a synthetic stand-in.

The real cadence is the OpSim ``baseline_v3.0_10yrs`` table that ships inside the
``redback`` wheel (``redback/tables/rubin_baseline_v3.0_10yrs.tar.gz``, despite its name
a gzipped CSV of 2.09M visits).  ``redback`` itself is never imported: the file is read
from an installed ``redback`` package, from a ``redback-*.whl`` in the cache directory
(``pip download redback --no-deps -d ~/.cache/alertbroker``), or from the path in
``$ALERTBROKER_OPSIM``.  The columns we need are cached once as a compact ``.npz`` in
``$ALERTBROKER_CACHE`` (default ``~/.cache/alertbroker``).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANDS = "ugrizy"
FOV_RADIUS_DEG = 1.75
OPSIM_MEMBER = "redback/tables/rubin_baseline_v3.0_10yrs.tar.gz"
CACHE_NAME = "opsim_baseline_v3.0_10yrs.npz"
# Rubin's deep-drilling fields (RA, Dec deg; baseline v3.0 pointings; EDFS is two pointings)
DDF_FIELDS: dict[str, tuple[float, float]] = {
    "COSMOS": (150.11, 2.23), "XMM_LSS": (35.57, -4.82), "ECDFS": (52.98, -28.12),
    "ELAISS1": (9.45, -44.02), "EDFS_a": (58.90, -49.32), "EDFS_b": (63.60, -47.60)}
DDF_RADIUS_DEG = 1.5  # objects this close to a DDF centre get its (dithered) visits


def cache_dir() -> Path:
    """Return the user cache directory (``$ALERTBROKER_CACHE`` or ``~/.cache/alertbroker``)."""
    return Path(os.environ.get("ALERTBROKER_CACHE", Path.home() / ".cache" / "alertbroker"))


@dataclass(frozen=True)
class Cadence:
    """A visit table sorted by time.

    Attributes
    ----------
    visit : numpy.ndarray
        OpSim ``obsHistID`` (int64), used as the Rubin visit id.
    ra, dec : numpy.ndarray
        Pointing centre in degrees.
    mjd : numpy.ndarray
        Exposure midpoint (MJD).
    band : numpy.ndarray
        Band index into ``"ugrizy"`` (int8).
    m5 : numpy.ndarray
        Five-sigma point-source depth (AB mag).
    source : str
        ``"opsim"`` or ``"synthetic"``.
    """

    visit: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    mjd: np.ndarray
    band: np.ndarray
    m5: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.mjd.size)

    def window(self, t_lo: float, t_hi: float) -> np.ndarray:
        """Indices of visits with ``t_lo <= mjd < t_hi``."""
        lo, hi = np.searchsorted(self.mjd, [t_lo, t_hi])
        return np.arange(lo, hi)


def _find_opsim_source() -> Path | None:
    env = os.environ.get("ALERTBROKER_OPSIM")
    if env and Path(env).exists():
        return Path(env)
    spec = importlib.util.find_spec("redback")  # locates without importing
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "tables" / "rubin_baseline_v3.0_10yrs.tar.gz"
            if p.exists():
                return p
    wheels = sorted(cache_dir().glob("redback-*.whl"))
    return wheels[-1] if wheels else None


def _read_opsim_csv(src: Path) -> Cadence:
    import polars as pl

    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as zf:
            raw = gzip.decompress(zf.read(OPSIM_MEMBER))
    elif src.suffix == ".gz":
        raw = gzip.decompress(src.read_bytes())
    else:
        raw = src.read_bytes()
    df = pl.read_csv(io.BytesIO(raw)).sort("expMJD")
    band_map = {f"lsst{b}": i for i, b in enumerate(BANDS)}
    band = df["filter"].replace_strict(band_map, return_dtype=pl.Int8).to_numpy()
    return Cadence(
        visit=df["obsHistID"].to_numpy().astype(np.int64),
        ra=np.degrees(df["_ra"].to_numpy()),
        dec=np.degrees(df["_dec"].to_numpy()),
        mjd=df["expMJD"].to_numpy().astype(np.float64),
        band=band,
        m5=df["fiveSigmaDepth"].to_numpy().astype(np.float32),
        source="opsim",
    )


def load_opsim(refresh: bool = False) -> Cadence:
    """Load the OpSim baseline cadence, building the ``.npz`` cache on first use.

    Raises
    ------
    FileNotFoundError
        If neither the cache nor a copy of the ``redback`` table is found.
    """
    cache = cache_dir() / CACHE_NAME
    if cache.exists() and not refresh:
        with np.load(cache) as z:
            return Cadence(**{k: z[k] for k in ("visit", "ra", "dec", "mjd", "band", "m5")},
                           source="opsim")
    src = _find_opsim_source()
    if src is None:
        raise FileNotFoundError(
            "OpSim table not found: run `pip download redback --no-deps -d "
            f"{cache_dir()}` or set ALERTBROKER_OPSIM to the .tar.gz/.whl"
        )
    cad = _read_opsim_csv(src)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process's own: two first runs at once each write theirs, and each replace is atomic
    # (one shared name let the second's replace find nothing, and `auto` fell back to the synthetic cadence)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, visit=cad.visit, ra=cad.ra, dec=cad.dec, mjd=cad.mjd, band=cad.band, m5=cad.m5)
    tmp.replace(cache)
    return cad


def synthetic_cadence(start_mjd: float, days: float, seed: int = 0) -> Cadence:
    """A Rubin-like cadence for tests and offline use when OpSim is missing.

    A fixed grid of fields (dec -70..+10) is revisited every ~3 nights in pairs of
    visits ~33 min apart; depths scatter around the baseline median per band.
    """
    rng = np.random.default_rng(seed)
    decs = np.arange(-70.0, 10.1, 2.5)
    f_ra: list[np.ndarray] = []
    f_dec: list[np.ndarray] = []
    for d in decs:
        n = max(1, int(360 * np.cos(np.radians(d)) / 2.5))
        f_ra.append((np.arange(n) + 0.5 * (len(f_ra) % 2)) * 360.0 / n)
        f_dec.append(np.full(n, d))
    fra, fdec = np.concatenate(f_ra), np.concatenate(f_dec)
    m5_med = np.array([23.7, 24.8, 24.4, 23.9, 23.3, 22.4])
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("ra", "dec", "mjd", "band", "m5")}
    for night in range(int(np.ceil(days))):
        t0 = np.floor(start_mjd) + night + 0.5 - 0.45  # ~23:00 local
        # one third of the sky per night, moving with season; 85% clear nights
        if rng.random() > 0.85:
            continue
        sel = np.flatnonzero((np.arange(fra.size) + night) % 3 == 0)
        sel = sel[rng.random(sel.size) < 0.9]
        order = rng.permutation(sel.size)
        t_first = t0 + np.linspace(0, 0.35, sel.size)[order]
        b1 = rng.choice(6, sel.size, p=[0.06, 0.09, 0.22, 0.22, 0.2, 0.21])
        b2 = np.clip(b1 + rng.choice([-1, 0, 1], sel.size), 0, 5)
        for t, b in ((t_first, b1), (t_first + 0.023, b2)):
            out["ra"].append(fra[sel] + rng.normal(0, 0.2, sel.size))
            out["dec"].append(fdec[sel] + rng.normal(0, 0.2, sel.size))
            out["mjd"].append(t)
            out["band"].append(b.astype(np.int8))
            out["m5"].append((m5_med[b] + rng.normal(0, 0.3, sel.size)).astype(np.float32))
    cols = {k: np.concatenate(v) for k, v in out.items()}
    order = np.argsort(cols["mjd"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    return Cadence(visit=np.arange(order.size, dtype=np.int64) + 1, source="synthetic", **cols)


def visits_covering(cad: Cadence, idx: np.ndarray, ra: np.ndarray, dec: np.ndarray,
                    radius_deg: float = FOV_RADIUS_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Find, for each position, the visits among ``idx`` whose field covers it.

    Parameters
    ----------
    cad : Cadence
        The visit table.
    idx : numpy.ndarray
        Candidate visit indices (e.g. a time window), any order.
    ra, dec : numpy.ndarray
        Object positions in degrees.
    radius_deg : float
        Field-of-view radius.

    Returns
    -------
    offsets, visits : numpy.ndarray
        CSR layout: the visits of object ``i`` are ``visits[offsets[i]:offsets[i+1]]``,
        indices into ``cad`` sorted by time.
    """
    by_dec = idx[np.argsort(cad.dec[idx], kind="stable")]
    vdec = cad.dec[by_dec]
    vx, vy, vz = _unit(cad.ra[by_dec], vdec)
    ox, oy, oz = _unit(ra, dec)
    cos_r = np.cos(np.radians(radius_deg))
    lo = np.searchsorted(vdec, dec - radius_deg)
    hi = np.searchsorted(vdec, dec + radius_deg)
    chunks: list[np.ndarray] = []
    counts = np.zeros(ra.size, dtype=np.int64)
    for i in range(ra.size):
        a, b = lo[i], hi[i]
        cosd = vx[a:b] * ox[i] + vy[a:b] * oy[i] + vz[a:b] * oz[i]
        hit = np.sort(by_dec[a:b][cosd >= cos_r])
        chunks.append(hit)
        counts[i] = hit.size
    offsets = np.zeros(ra.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    visits = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return offsets, visits


def scatter_in_fov(rng: np.random.Generator, cad: Cadence,
                   v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions uniform over the field of view of visits ``v`` (one per visit index).

    A flat-sky offset of up to :data:`FOV_RADIUS_DEG` from each pointing (draws: radius, then
    angle), so a position can fall just outside the field near its edge.

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees.
    """
    r = FOV_RADIUS_DEG * np.sqrt(rng.uniform(0, 1, v.size))
    phi = rng.uniform(0, 2 * np.pi, v.size)
    dec = np.clip(cad.dec[v] + r * np.sin(phi), -89.9, 89.9)
    return (cad.ra[v] + r * np.cos(phi) / np.cos(np.radians(dec))) % 360.0, dec


def in_ddf(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Whether each position lies within ``DDF_RADIUS_DEG`` of a deep-drilling field centre."""
    x, y, zc = _unit(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64))
    out = np.zeros(np.size(ra), dtype=bool)
    cos_r = np.cos(np.radians(DDF_RADIUS_DEG))
    for fra, fdec in DDF_FIELDS.values():
        fx, fy, fz = _unit(np.array([fra]), np.array([fdec]))
        out |= x * fx + y * fy + zc * fz >= cos_r
    return out


def _unit(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, d = np.radians(ra), np.radians(dec)
    return np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)
