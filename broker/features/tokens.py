"""Light-curve tokens (layout: :data:`broker.tokens.LC_FIELDS`) from cleaned CSR rows, and host tokens.

Per object, the flux scale is the median flux error of its usable rows (the
typical noise level, nJy; 1 nJy when there is none), so ``flux`` tokens are
``arcsinh(flux / scale)``: linear around the noise, logarithmic for bright
points. When an object has more usable rows than the ``L`` token slots, the
``L // 2`` most recent rows are kept, and the remaining slots go to the most
significant (largest ``|flux| / err``) older rows; kept tokens stay in time
order, padded slots are zero and masked.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from broker.batch import BANDS, F64, I8, I64, B
from broker.features.hosts import MAG_MISSING, HostMatch
from broker.tokens import HOST_KIND_DLR, HOST_KIND_MAG, HOST_KIND_SEP, HOST_MAX_TOKENS

F32 = np.ndarray


@nb.njit(cache=True, inline="always")
def slog1p(x: float) -> float:
    """Signed ``log1p(|x|)``."""
    return math.copysign(math.log1p(abs(x)), x)


@nb.njit(cache=True)
def _keep_most_significant(sig: F64, m: int, keep: B) -> None:
    """Set ``keep[j]`` for the ``m`` smallest ``sig`` (the most significant older rows), the rest False.

    The ``m`` smallest form a unique set unless the ``m``-th value is tied past ``m``: then the
    rows are the first ``m`` of ``argsort`` (the rule this replaces, so the tokens are the same).
    Why: a full sort of a deep-drilling history's ~1,100 older rows was most of the tokens' cost;
    a selection is linear.
    """
    n_old = sig.shape[0]
    thr = np.partition(sig, m - 1)[m - 1]
    below = 0
    ties = 0
    for j in range(n_old):
        if sig[j] < thr:
            below += 1
        elif sig[j] == thr:
            ties += 1
    if below + ties == m:
        for j in range(n_old):
            keep[j] = sig[j] <= thr
        return
    order = np.argsort(sig)
    keep[:n_old] = False
    for j in range(m):
        keep[order[j]] = True


@nb.njit(parallel=True, cache=True)
def lc_tokens(
    offsets: I64,
    t: F64,
    flux: F64,
    err: F64,
    band: I8,
    det: B,
    ref: F64,
    n_tokens: int,
) -> tuple[F32, B, F64, B]:
    """Build padded light-curve tokens.

    Parameters
    ----------
    offsets : ndarray of int64, shape (n + 1,)
        Object ranges of the time-ordered usable rows.
    t, flux, err : ndarray of float64
        Time (MJD), flux and error (nJy) of the rows.
    band : ndarray of int8
        Band index of the rows.
    det : ndarray of bool
        Detection flag of the rows.
    ref : ndarray of float64, shape (n,)
        Reference time per object (the alert's MJD).
    n_tokens : int
        Token slots ``L`` per object.

    Returns
    -------
    tokens : ndarray of float32, shape (n, L, 5)
    mask : ndarray of bool, shape (n, L)
    scale : ndarray of float64, shape (n,)
        Flux scale (nJy) per object.
    truncated : ndarray of bool, shape (n,)
        True where rows were dropped to fit ``L``.
    """
    n = offsets.shape[0] - 1
    tokens = np.zeros((n, n_tokens, 5), np.float32)
    mask = np.zeros((n, n_tokens), np.bool_)
    scale = np.ones(n)
    truncated = np.zeros(n, np.bool_)
    for i in nb.prange(n):
        a = offsets[i]
        b = offsets[i + 1]
        k = b - a
        if k == 0:
            continue
        s = np.median(err[a:b])
        if s > 0.0 and np.isfinite(s):
            scale[i] = s
        keep = np.ones(k, np.bool_)
        if k > n_tokens:
            truncated[i] = True
            n_recent = n_tokens // 2
            n_old = k - n_recent
            sig = np.empty(n_old)
            for j in range(n_old):
                sig[j] = -abs(flux[a + j]) / err[a + j]
            _keep_most_significant(sig, n_tokens - n_recent, keep)
        slot = 0
        sc = scale[i]
        for j in range(k):
            if not keep[j]:
                continue
            r = a + j
            tokens[i, slot, 0] = slog1p(t[r] - ref[i])
            tokens[i, slot, 1] = band[r]
            tokens[i, slot, 2] = math.asinh(flux[r] / sc)
            tokens[i, slot, 3] = err[r] / sc
            tokens[i, slot, 4] = 1.0 if det[r] else 0.0
            mask[i, slot] = True
            slot += 1
    return tokens, mask, scale, truncated


def host_tokens(match: HostMatch) -> tuple[np.ndarray, np.ndarray]:
    """Host tokens (layout :data:`broker.tokens.HOST_FIELDS`) and their mask.

    Slots 0..5 are the ugrizy magnitudes (masked when missing, NaN or >= 90),
    slot 6 the separation (arcsec), slot 7 the DLR separation (masked without a
    shape). An alert without a host has all tokens masked.
    """
    n = match.host_id.shape[0]
    tok = np.zeros((n, HOST_MAX_TOKENS, 4), np.float32)
    mask = np.zeros((n, HOST_MAX_TOKENS), np.bool_)
    has = match.host_id >= 0
    nb_ = len(BANDS)
    mag_ok = has[:, None] & np.isfinite(match.mag) & (match.mag < MAG_MISSING)
    err = np.where(np.isfinite(match.magerr), match.magerr, 0.0)
    tok[:, :nb_, 0] = HOST_KIND_MAG
    tok[:, :nb_, 1] = np.arange(nb_, dtype=np.float32)
    tok[:, :nb_, 2] = np.where(mag_ok, match.mag, 0.0)
    tok[:, :nb_, 3] = np.where(mag_ok, err, 0.0)
    mask[:, :nb_] = mag_ok
    sep_ok = has & np.isfinite(match.sep_arcsec)
    dlr_ok = has & np.isfinite(match.dlr)
    extra = ((nb_, HOST_KIND_SEP, match.sep_arcsec, sep_ok), (nb_ + 1, HOST_KIND_DLR, match.dlr, dlr_ok))
    for slot, kind, val, ok in extra:
        tok[:, slot, 0] = np.where(ok, kind, 0.0)
        tok[:, slot, 1] = np.where(ok, -1.0, 0.0)
        tok[:, slot, 2] = np.where(ok, val, 0.0)
        mask[:, slot] = ok
    tok[~mask] = 0.0
    return tok, mask
