"""Flux forecast at the next visits (``annotations.forecast``): a light head on the frozen encoder.

Given an alert's pooled encoder embedding ``emb`` (n, d) and its light-curve tokens, the
:class:`ForecastHead` predicts the quantiles :data:`broker.annotations.FORECAST_QUANTILES` of a
later measurement's flux token (``arcsinh(flux / scale)``, the units of the light-curve tokens,
:mod:`broker.tokens`) in a given band at a given number of days after the alert. Besides the
embedding it reads, for every band, the last observed point (flux and error tokens, how long ago),
the brightest token and the number of points: what persistence and colour need, which a pooled
embedding keeps only loosely. Conditioning on the query's time and band is the one of
:class:`models.heads.ReconHead` (Fourier features of the signed-log time, one-hot band).

Training masks the later points (:mod:`models.forecast_train`): each light curve is cut at a
random detection (the alert), the tokens up to the cut go through the frozen encoder, and the
head learns the pinball loss of the points after the cut. The quantiles are ordered by
construction (``q50`` plus or minus cumulative softplus offsets). Their spread is then calibrated
on a held-out split: per horizon bin, each of the four outer quantiles' distance from ``q50`` is
multiplied by a factor chosen so that the held-out coverage is exact (:meth:`ForecastHead.calibrate`).
An uncalibrated head (``fitted == 0``, e.g. a checkpoint written before the head existed, whose
state lacks the ``forecast.`` keys) forecasts nothing: NaN, published as null.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from broker.annotations import FORECAST_HORIZONS_DAYS, FORECAST_QUANTILES
from broker.batch import BANDS
from broker.tokens import LC_FIELDS
from models.encoder import BAND_SLOTS, time_band_features

N_BANDS = len(BANDS)
#: Upper edges (days) of the horizon bins that get their own interval calibration.
HORIZON_EDGES: tuple[float, ...] = (2.0, 6.0)
_CTX = 6  # context values per band, see ForecastHead.band_context
_DT, _BAND, _FLUX, _ERR = (LC_FIELDS.index(f) for f in ("dt", "band", "flux", "flux_err"))


def slog1p(x: Tensor) -> Tensor:
    """Signed ``log1p(|x|)`` (the light-curve token's time transform)."""
    return torch.sign(x) * torch.log1p(x.abs())


def horizon_bin(dt_days: Tensor) -> Tensor:
    """Calibration bin of each query time (0 .. len(HORIZON_EDGES))."""
    edges = torch.tensor(HORIZON_EDGES, device=dt_days.device, dtype=dt_days.dtype)
    return torch.bucketize(dt_days.contiguous(), edges)


class ForecastHead(nn.Module):
    """Quantiles of a later flux token from the embedding and the last points per band.

    Parameters
    ----------
    d : int
        Width of the encoder embedding.
    n_fourier : int
        Fourier frequencies of the query time (as :class:`models.heads.ReconHead`).
    hidden : int
        Width of the MLP.
    """

    freqs: Tensor
    widen: Tensor
    fitted: Tensor

    def __init__(self, d: int, n_fourier: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(math.log(0.3), math.log(30.0), n_fourier)))
        # per horizon bin: factors on (q50-q05, q50-q16, q84-q50, q95-q50)
        self.register_buffer("widen", torch.ones(len(HORIZON_EDGES) + 1, 4))
        self.register_buffer("fitted", torch.zeros(()))
        d_in = d + N_BANDS * _CTX + 2 * n_fourier + 1 + BAND_SLOTS  # time_band_features: sin, cos, dt; one-hot
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, len(FORECAST_QUANTILES)))

    @staticmethod
    def band_context(lc: Tensor, lc_mask: Tensor) -> Tensor:
        """Per band (n, 6, 6): has data, last flux, last error, time since last, max flux, log1p count.

        All bands at once on an (n, L, 6) band mask: a loop over the bands cost ~60 small ops per
        batch, ~7 % of the model's time at batch 64 (same values).
        """
        lc = torch.nan_to_num(lc.float())
        bands = torch.arange(N_BANDS, device=lc.device)
        m = lc_mask[..., None] & (lc[..., _BAND].long()[..., None] == bands)        # (n, L, B)
        pos = torch.arange(lc.shape[1], device=lc.device)[None, :, None]
        last = torch.where(m, pos, -1).max(1).values.clamp(min=0)                    # (n, B)
        tok = lc.gather(1, last[..., None].expand(-1, -1, lc.shape[2]))              # (n, B, F)
        h = m.any(1).float()
        peak = torch.where(m, lc[..., _FLUX, None], -1e4).max(1).values
        return torch.stack([h, tok[..., _FLUX] * h, torch.log1p(tok[..., _ERR].clamp(min=0)) * h,
                            -tok[..., _DT] * h, peak * h, torch.log1p(m.sum(1).float())], -1)

    def raw(self, emb: Tensor, lc: Tensor, lc_mask: Tensor, dt_days: Tensor, band: Tensor,
            ctx: Tensor | None = None) -> Tensor:
        """Uncalibrated ordered quantiles (n, Q, 5) of the flux token at ``dt_days``, ``band`` (n, Q).

        ``ctx`` is :meth:`band_context` of ``lc``, computed here when not given.
        """
        ctx = self.band_context(lc, lc_mask) if ctx is None else ctx
        fourier, onehot = time_band_features(slog1p(dt_days.float())[..., None], band, self.freqs)
        # the first layer split by what varies: the alert part [emb, ctx] is one product per alert,
        # broadcast over its queries, not one per (alert, query) pair (same sum, fewer products)
        first = cast(nn.Linear, self.mlp[0])
        k = emb.shape[1] + ctx.shape[1] * ctx.shape[2]
        per_alert = F.linear(torch.cat([emb.float(), ctx.flatten(1)], -1), first.weight[:, :k], first.bias)
        per_query = F.linear(torch.cat([fourier, onehot.float()], -1), first.weight[:, k:])
        o = self.mlp[1:](per_alert[:, None, :] + per_query).float()
        own = ctx.gather(1, band.long().clamp(0, N_BANDS - 1)[..., None].expand(-1, -1, _CTX))
        q50 = o[..., 2] + own[..., 1]  # a correction to the last flux seen in the band (0 if none)
        lo1 = q50 - F.softplus(o[..., 1])
        hi1 = q50 + F.softplus(o[..., 3])
        return torch.stack([lo1 - F.softplus(o[..., 0]), lo1, q50, hi1, hi1 + F.softplus(o[..., 4])], -1)

    def forward(self, emb: Tensor, lc: Tensor, lc_mask: Tensor, dt_days: Tensor, band: Tensor) -> Tensor:
        """Calibrated quantiles (n, Q, 5) in flux-token units (widths scaled by :attr:`widen`)."""
        return self.apply_widen(self.raw(emb, lc, lc_mask, dt_days, band), dt_days)

    def apply_widen(self, raw: Tensor, dt_days: Tensor) -> Tensor:
        """Scale each outer quantile's distance from ``q50`` by its bin's factor; keep them ordered."""
        w = self.widen[horizon_bin(dt_days)]
        mid = raw[..., 2]
        q05 = mid - w[..., 0] * (mid - raw[..., 0])
        q16 = mid - w[..., 1] * (mid - raw[..., 1])
        q84 = mid + w[..., 2] * (raw[..., 3] - mid)
        q95 = mid + w[..., 3] * (raw[..., 4] - mid)
        return torch.stack([torch.minimum(q05, q16), q16, mid, q84, torch.maximum(q84, q95)], -1)

    @torch.no_grad()
    def calibrate(self, raw: Tensor, dt_days: Tensor, y: Tensor) -> np.ndarray:
        """Fit :attr:`widen` on held-out targets ``y`` (m,) with raw quantiles (m, 5); returns it.

        The factor ``f`` for ``q16`` is the 84th percentile of ``(q50 - y) / (q50 - q16)``, so that
        exactly 16 % of held-out points fall below the widened ``q16``; likewise for the others.
        """
        mid = raw[:, 2]
        bins = horizon_bin(dt_days)
        levels = [(0, 1 - FORECAST_QUANTILES[0]), (1, 1 - FORECAST_QUANTILES[1]),
                  (3, FORECAST_QUANTILES[3]), (4, FORECAST_QUANTILES[4])]
        widen = np.ones((len(HORIZON_EDGES) + 1, 4))
        for b in range(widen.shape[0]):
            sel = bins == b
            if int(sel.sum()) < 20:
                continue
            for j, (col, level) in enumerate(levels):
                dist = (mid[sel] - raw[sel, col]).abs().clamp(min=1e-6)
                r = (mid[sel] - y[sel]) / dist if col < 2 else (y[sel] - mid[sel]) / dist
                widen[b, j] = max(float(torch.quantile(r.double(), level)), 0.05)
        self.widen.copy_(torch.as_tensor(widen))
        self.fitted.fill_(1.0)
        return widen

    @torch.no_grad()
    def grid(self, emb: Tensor, lc: Tensor, lc_mask: Tensor) -> Tensor:
        """Served forecast (n, 6, H, 5) in token units at ``FORECAST_HORIZONS_DAYS`` for every band.

        NaN for a band without light-curve tokens, and everywhere when the head is uncalibrated.
        """
        n, nh = emb.shape[0], len(FORECAST_HORIZONS_DAYS)
        shape = (n, N_BANDS, nh, len(FORECAST_QUANTILES))
        if not bool(self.fitted > 0):
            return emb.new_full(shape, float("nan"), dtype=torch.float32)
        dt = torch.tensor(FORECAST_HORIZONS_DAYS, device=emb.device).repeat(N_BANDS)[None].expand(n, -1)
        band = torch.arange(N_BANDS, device=emb.device).repeat_interleave(nh)[None].expand(n, -1)
        ctx = self.band_context(lc, lc_mask)
        q = self.apply_widen(self.raw(emb, lc, lc_mask, dt, band, ctx), dt).reshape(shape)
        has = ctx[..., 0] > 0  # the band has light-curve tokens
        return torch.where(has[:, :, None, None], q, torch.full_like(q, float("nan")))


def pinball(q: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """Mean pinball (quantile) loss of quantiles ``q`` (..., 5) for targets ``y`` (...) where ``valid``."""
    tau = torch.tensor(FORECAST_QUANTILES, device=q.device)
    d = y[..., None] - q
    loss = torch.maximum(tau * d, (tau - 1) * d).sum(-1)
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def to_njy(q: np.ndarray, log10_scale: np.ndarray) -> np.ndarray:
    """Flux tokens (n, ...) back to nJy with each alert's flux scale (``log10_flux_scale`` feature)."""
    scale = np.power(10.0, np.asarray(log10_scale, np.float64)).reshape((-1,) + (1,) * (q.ndim - 1))
    return (np.sinh(q.astype(np.float64)) * scale).astype(np.float32)
