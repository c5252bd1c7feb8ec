"""The featurizer stage: one batch in (:class:`~broker.batch.AlertBatch`), one batch out.

:func:`featurize` runs, over the whole batch and in parallel over objects:
cleaning (:mod:`.prepare`), statistics per band and over all bands
(:mod:`.stats`), Bazin fits per band (:mod:`.bazin`), peak shape features
(:mod:`.lcshape`), optionally Villar fits (:mod:`.villar`), a periodogram (:mod:`.periodogram`), light-curve tokens
(:mod:`.tokens`) and, with a :class:`~.hosts.HostMatcher`, host association
(:mod:`.hosts`). No Python code runs per alert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from broker.batch import BANDS, F64, I64, AlertBatch, B
from broker.features import flags as fl
from broker.features.bazin import bazin_csr, bazin_groups
from broker.features.fit_cache import BandFitCache
from broker.features.hosts import HostMatch, HostMatcher
from broker.features.lcshape import shape_csr
from broker.features.periodogram_fft import periodogram_peaks
from broker.features.prepare import CleanCurves, clean
from broker.features.registry import (
    BAZIN_OFFSET,
    EXTRA_OFFSET,
    FEATURE_NAMES,
    FEATURES,
    N_BAZIN,
    N_FEATURES,
    N_STATS,
    N_VILLAR,
    VILLAR_OFFSET,
)
from broker.features.stats import stats_csr
from broker.features.tokens import host_tokens, lc_tokens
from broker.features.villar import villar_csr
from broker.tokens import HOST_MAX_TOKENS, LC_MAX_TOKENS

_NB = len(BANDS)


@dataclass(frozen=True)
class FeatureConfig:
    """Featurizer settings.

    Attributes
    ----------
    max_tokens : int
        Light-curve token slots ``L`` per alert.
    bazin : bool
        Fit the Bazin function per band (NaN columns otherwise). Off by default since 2026-12-04:
        the fits were ~36 % of ``enrich()``'s time at 300 rows, and a model trained without them
        (the shipped one) scores about as well (served macro-F1 higher on five of six test sets,
        leave-one-generator-out mean 0.736 against 0.752: docs/models.md, "A model without the
        Bazin fits"); checkpoints that recorded ``bazin=True`` are still served with them.
    bazin_max_iter : int
        Maximum Levenberg-Marquardt steps per fit.
    villar : bool
        Fit the Villar function per band (off by default: it about doubles the
        cost of the Bazin fits; NaN columns otherwise).
    periodogram : bool
        Compute the periodogram peak (NaN columns otherwise).
    periodogram_max_freq : float
        Highest frequency searched, 1/day.
    periodogram_oversample : float
        Scan grid points per ``1 / span`` (the width of a peak).
    periodogram_max_n_freq : int
        Cap on the number of scan frequencies (past it the top frequency is lowered).
    periodogram_nyquist_factor : float
        Top frequency at most this many times the average Nyquist frequency
        ``n / (2 span)``; infinite by default, so ``max_freq`` for any point count
        (:mod:`.periodogram` says why).
    periodogram_refine : int
        Highest local maxima of the scan recomputed in float64 on a finer grid; 0: the
        scan's own frequencies within ``SCAN_MARGIN`` of its peak (the grid of
        :data:`LEGACY_SETTINGS`).
    color_window : float
        Days within which a band's flux counts as "at peak".
    """

    max_tokens: int = LC_MAX_TOKENS
    bazin: bool = False
    bazin_max_iter: int = 50
    villar: bool = False
    periodogram: bool = True
    periodogram_max_freq: float = 5.0
    periodogram_oversample: float = 2.0
    periodogram_max_n_freq: int = 8192
    periodogram_nyquist_factor: float = math.inf
    periodogram_refine: int = 3
    color_window: float = 3.0

    def settings(self) -> dict[str, bool | int | float]:
        """Every setting that changes a summary feature's value (all but ``max_tokens``).

        A checkpoint records them (``ModelConfig.features``) and the serving featurizer
        takes them from it (:meth:`from_settings`).
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "max_tokens"}

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None, max_tokens: int = LC_MAX_TOKENS) -> FeatureConfig:
        """Inverse of :meth:`settings`; a missing or unknown setting is an error, not a default.

        ``None`` (a predictor without a record, ``Predictor.feature_settings``) gives the defaults.

        Raises
        ------
        ValueError
            ``settings`` does not name exactly the fields of :meth:`settings`.
        """
        if settings is None:
            return cls(max_tokens=max_tokens)
        want, got = set(cls().settings()), set(settings)
        if got != want:
            raise ValueError(f"featurizer settings differ from FeatureConfig's: missing {sorted(want - got)}, "
                             f"unknown {sorted(got - want)}")
        return cls(max_tokens=max_tokens, **settings)

    @property
    def periodogram_grid(self) -> tuple[float, float, int, float, int]:
        """The periodogram's settings in :func:`~broker.features.periodogram.periodogram_csr`'s order."""
        return (self.periodogram_max_freq, self.periodogram_oversample, self.periodogram_max_n_freq,
                self.periodogram_nyquist_factor, self.periodogram_refine)


#: Featurizer settings of the checkpoints written before they recorded them (until 2026-12-03):
#: the periodogram grid cut at twice the average Nyquist frequency and 1,024 frequencies (1,025:
#: that grid's count formula allowed one more), read on the scan's own frequencies. With them the
#: code gives the old code's periods and powers: identical on 300 random multi-band curves, and the
#: previous default's sel19 figures to the last digit (both checked when the grid was widened);
#: tests/test_features_periodogram.py checks them against light-curve on the legacy grid.
LEGACY_SETTINGS: dict[str, bool | int | float] = {
    "bazin": True, "bazin_max_iter": 50, "villar": False, "periodogram": True, "periodogram_max_freq": 5.0,
    "periodogram_oversample": 3.0, "periodogram_max_n_freq": 1025, "periodogram_nyquist_factor": 2.0,
    "periodogram_refine": 0, "color_window": 3.0,
}


@dataclass(frozen=True)
class Features:
    """Output of :func:`featurize` for ``n`` alerts (token layouts in :mod:`broker.tokens`).

    Attributes
    ----------
    lc, lc_mask : ndarray (n, L, 5) float32, (n, L) bool
        Light-curve tokens.
    host, host_mask : ndarray (n, 8, 4) float32, (n, 8) bool
        Host tokens (all masked without a host or a matcher).
    feat, feat_mask : ndarray (n, F, 2) float32, (n, F) bool
        Summary-feature tokens, one slot per feature; NaN features are masked.
    summary : ndarray (n, F) float64
        Raw feature values, columns named by ``names``.
    names : tuple of str
        Feature names (:data:`~broker.features.registry.FEATURE_NAMES`).
    flags : ndarray (n,) int64
        Bad-input flags (:mod:`broker.features.flags`).
    host_match : HostMatch
        Host id, position, separation (arcsec) and DLR per alert (-1 / NaN when none).
    """

    lc: np.ndarray
    lc_mask: B
    host: np.ndarray
    host_mask: B
    feat: np.ndarray
    feat_mask: B
    summary: F64
    names: tuple[str, ...]
    flags: I64
    host_match: HostMatch

    def __len__(self) -> int:
        return int(self.summary.shape[0])


_ASINH = np.array([k for k, f in enumerate(FEATURES) if f.transform == "asinh"], np.int64)
_SLOG = np.array([k for k, f in enumerate(FEATURES) if f.transform == "slog1p"], np.int64)


def _transform(summary: F64) -> F64:
    """Apply each feature's token transform (see :class:`~.registry.FeatureSpec`)."""
    out = summary.copy()
    out[:, _ASINH] = np.arcsinh(out[:, _ASINH])
    x = out[:, _SLOG]
    out[:, _SLOG] = np.sign(x) * np.log1p(np.abs(x))
    return out


def _no_host(n: int) -> HostMatch:
    nan = np.full(n, np.nan)
    return HostMatch(
        host_id=np.full(n, -1, np.int64),
        ra=nan,
        dec=nan.copy(),
        sep_arcsec=nan.copy(),
        dlr=nan.copy(),
        mag=np.full((n, _NB), np.nan, np.float32),
        magerr=np.full((n, _NB), np.nan, np.float32),
    )


def _bazin(cc: CleanCurves, batch: AlertBatch, cfg: FeatureConfig, fits: BandFitCache | None) -> F64:
    """Bazin fits of every (alert, band) group, (6 n, N_BAZIN); with ``fits``, unchanged bands are not refitted."""
    if fits is None or len(batch.table) != cc.band_offsets.shape[0] // _NB:
        return bazin_csr(cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err, cfg.bazin_max_iter)
    keys = fits.keys_for(np.asarray(batch.table["diaObjectId"]), cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err, _NB)
    rows, todo = fits.lookup(keys, N_BAZIN)
    groups, src = fits.share(keys, todo)
    rows[groups] = bazin_groups(cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err, groups, cfg.bazin_max_iter)
    copies = np.flatnonzero(src != np.arange(src.size))
    rows[copies] = rows[src[copies]]
    fits.store(keys, rows, todo)
    return rows


def featurize(batch: AlertBatch, config: FeatureConfig | None = None, hosts: HostMatcher | None = None,
              fits: BandFitCache | None = None) -> Features:
    """Compute tokens, summary features and host association for a batch.

    Parameters
    ----------
    batch : AlertBatch
        Decoded alerts (CSR light curves plus the per-alert table).
    config : FeatureConfig, optional
        Settings; defaults when None.
    hosts : HostMatcher, optional
        Host matcher; without one every host token is masked.
    fits : BandFitCache, optional
        Per-band Bazin fits of earlier alerts (:mod:`.fit_cache`): a band whose points are those
        of an earlier alert of the same object is not refitted (same result).

    Returns
    -------
    Features
        Never raises on bad values: see :mod:`broker.features.flags`.
    """
    cfg = config or FeatureConfig()
    lc = batch.lightcurves
    n = lc.n_alerts
    cc = clean(lc)
    flags = cc.flags.copy()
    ref = np.asarray(batch.table["mjd"], np.float64) if len(batch.table) else np.full(n, np.nan)
    last = np.full(n, np.nan)
    has = np.diff(cc.offsets) > 0
    last[has] = cc.t[cc.offsets[1:][has] - 1]
    bad_ref = ~np.isfinite(ref)
    flags[bad_ref] |= fl.BAD_REFERENCE
    ref = np.where(bad_ref, np.where(np.isfinite(last), last, 0.0), ref)

    summary = np.full((n, N_FEATURES), np.nan)
    summary[:, :N_STATS] = stats_csr(cc.offsets, cc.t, cc.flux, cc.err)
    summary[:, N_STATS:BAZIN_OFFSET] = stats_csr(cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err).reshape(n, _NB * N_STATS)
    if cfg.bazin:
        bz = _bazin(cc, batch, cfg, fits).reshape(n, _NB, N_BAZIN)
        bz[:, :, 2] -= ref[:, None]
        summary[:, BAZIN_OFFSET:VILLAR_OFFSET] = bz.reshape(n, _NB * N_BAZIN)
    if cfg.villar:
        vl = villar_csr(cc.band_offsets, cc.b_t, cc.b_flux, cc.b_err).reshape(n, _NB, N_VILLAR)
        vl[:, :, 2] -= ref[:, None]
        summary[:, VILLAR_OFFSET:EXTRA_OFFSET] = vl.reshape(n, _NB * N_VILLAR)
    shape = shape_csr(cc.offsets, cc.t, cc.flux, cc.band_offsets, cc.b_t, cc.b_flux, cfg.color_window)
    summary[:, EXTRA_OFFSET : EXTRA_OFFSET + shape.shape[1]] = shape
    col = EXTRA_OFFSET + shape.shape[1]
    if cfg.periodogram:
        summary[:, col : col + 2] = periodogram_peaks(cc.offsets, cc.t, cc.flux, cc.err, cc.band, *cfg.periodogram_grid)
    tok, mask, scale, truncated = lc_tokens(cc.offsets, cc.t, cc.flux, cc.err, cc.band, cc.det, ref, cfg.max_tokens)
    flags[truncated] |= fl.TRUNCATED
    summary[:, col + 2] = np.log10(scale)

    if hosts is not None:
        ra = np.asarray(batch.table["ra"], np.float64)
        dec = np.asarray(batch.table["dec"], np.float64)
        flags[~(np.isfinite(ra) & np.isfinite(dec))] |= fl.BAD_POSITION
        match = hosts.match(ra, dec)
    else:
        match = _no_host(n)
    htok, hmask = host_tokens(match)

    fmask = np.isfinite(summary)
    feat = np.zeros((n, N_FEATURES, 2), np.float32)
    feat[:, :, 0] = np.arange(N_FEATURES, dtype=np.float32)
    feat[:, :, 1] = np.where(fmask, _transform(summary), 0.0)
    feat[~fmask] = 0.0
    return Features(
        lc=tok,
        lc_mask=mask,
        host=htok,
        host_mask=hmask,
        feat=feat,
        feat_mask=fmask,
        summary=summary,
        names=FEATURE_NAMES,
        flags=flags,
        host_match=match,
    )


assert HOST_MAX_TOKENS == _NB + 2
