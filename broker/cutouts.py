"""Cutouts as image tokens: read an alert's three FITS stamps, put them in noise units.

Rubin ships three 30 x 30 cutouts per alert (difference, science, template), each a small
FITS file: a float32 primary image in nJy, an ``UNCERT`` extension holding its variance and a
``PSFIMAGE`` extension. This module reads them without astropy and turns them into the image
tokens of :mod:`broker.tokens`: ``arcsinh(pixel / (IMG_SOFTENING * sigma))`` per channel,
``sigma`` the image's noise from its variance plane (a robust MAD estimate without one),
cropped or zero-padded to ``IMG_SIZE`` about the centre. Measured on the real alerts of
tests/data/real_alerts, three stamps take 4.9 ms per alert with astropy, 652 us with
:func:`read_cutout` and 171 us on the compiled path (:mod:`broker.cutouts_fast`), which
:func:`image_tokens` takes whenever it can.

Why noise units: the difference image's job is to say *is this a point source at the
noise level or an artefact*, and the template's *is there a host*; both are questions about
signal to noise, and in nJy the same stamp spans seven decades between a faint transient and
a bright host. Why arcsinh: linear near the noise, logarithmic on a bright nucleus.

Bad stamps never fail an alert: a stamp that does not parse (:class:`CutoutUnreadable`
names why) leaves that alert's images masked, and :attr:`ImageTokens.unreadable` counts it.
Memory is bounded whatever a stamp claims: axes above ``MAX_AXIS`` pixels, more than
``MAX_HEADER_BLOCKS`` header blocks or a gzip stamp inflating past ``MAX_INFLATED`` bytes are
refused before anything is allocated.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from broker.cutouts_fast import BLOCK, MAX_AXIS, MAX_HEADER_BLOCKS, fast_tokens
from broker.errors import CutoutUnreadable
from broker.tokens import IMG_CHANNELS, IMG_SIZE, IMG_SOFTENING

MAX_INFLATED = 4 << 20
_CARD = re.compile(r"(BITPIX|NAXIS[0-9]?|EXTNAME|BSCALE|BZERO) *= ([^/]{0,70})")
_END = re.compile(r"END {77}")
_DTYPES = {-32: ">f4", -64: ">f8", 8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}


@dataclass(frozen=True)
class ImageTokens:
    """Image tokens of a batch (layout :mod:`broker.tokens`).

    Attributes
    ----------
    img : ndarray of float32, shape (n, len(IMG_CHANNELS), IMG_SIZE, IMG_SIZE)
        Normalised stamps; zeros where masked.
    mask : ndarray of bool, shape (n,)
        True where all three stamps were read.
    unreadable : int
        Alerts whose stamps were present but did not parse.
    """

    img: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    unreadable: int = 0

    def take(self, idx: npt.NDArray[np.int64]) -> ImageTokens:
        """The tokens of alerts ``idx`` (``unreadable`` is a decode-time count and is not carried)."""
        return ImageTokens(self.img[idx], self.mask[idx])

    @staticmethod
    def empty(n: int) -> ImageTokens:
        """All-masked tokens for ``n`` alerts."""
        return ImageTokens(np.zeros((n, len(IMG_CHANNELS), IMG_SIZE, IMG_SIZE), np.float32), np.zeros(n, bool))


def _cards(raw: bytes, at: int) -> tuple[dict[str, str], int]:
    """The header keywords this reader uses, of the HDU at ``at``, and where its data starts."""
    out: dict[str, str] = {}
    for blk in range(MAX_HEADER_BLOCKS):
        chunk = raw[at + blk * BLOCK : at + (blk + 1) * BLOCK]
        if len(chunk) < BLOCK:
            raise CutoutUnreadable("FITS header truncated")
        text = chunk.decode("latin-1")
        for m in _CARD.finditer(text):
            if m.start() % 80 == 0:  # a keyword only counts at the start of an 80-column card
                out[m.group(1)] = m.group(2).strip().strip("'").strip()
        for m in _END.finditer(text):
            if m.start() % 80 == 0:
                return out, at + (blk + 1) * BLOCK
    raise CutoutUnreadable(f"no END card in {MAX_HEADER_BLOCKS} header blocks")


def _hdu(raw: bytes, at: int) -> tuple[dict[str, str], npt.NDArray[np.float32] | None, int]:
    """One HDU: header, its 2-D image (None for a non-image HDU) and where the next HDU starts."""
    hdr, data_at = _cards(raw, at)
    try:
        bitpix, naxis = int(hdr.get("BITPIX", "0")), int(hdr.get("NAXIS", "0"))
        dims = [int(hdr.get(f"NAXIS{k}", "0")) for k in range(1, naxis + 1)]
    except ValueError as e:
        raise CutoutUnreadable(f"bad FITS axis card: {e}") from None
    if bitpix not in _DTYPES or naxis > 3 or any(d < 0 or d > MAX_AXIS for d in dims):
        raise CutoutUnreadable(f"unsupported FITS image BITPIX={bitpix} NAXIS={naxis} {dims}")
    size = int(np.prod(dims)) * abs(bitpix) // 8 if naxis else 0
    if data_at + size > len(raw):
        raise CutoutUnreadable("FITS data truncated")
    nxt = data_at + -(-size // BLOCK) * BLOCK
    if naxis != 2:
        return hdr, None, nxt
    arr = np.frombuffer(raw, _DTYPES[bitpix], dims[0] * dims[1], data_at).reshape(dims[1], dims[0])
    img = arr.astype(np.float32)
    scale, zero = float(hdr.get("BSCALE", "1") or 1), float(hdr.get("BZERO", "0") or 0)
    if scale != 1.0 or zero != 0.0:
        img = img * np.float32(scale) + np.float32(zero)
    return hdr, img, nxt


def read_cutout(raw: bytes) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """The image (ny, nx) and, when the stamp has an ``UNCERT`` extension, its variance.

    Raises
    ------
    CutoutUnreadable
        Not a FITS image (or a gzip stamp of one), truncated, too large, or inflating too far.
    """
    if raw[:2] == b"\x1f\x8b":  # gzip-compressed stamp: inflate within a fixed budget
        d = zlib.decompressobj(wbits=31)
        try:
            raw = d.decompress(raw, MAX_INFLATED)
        except zlib.error as e:
            raise CutoutUnreadable(f"bad gzip stamp: {e}") from None
        if d.unconsumed_tail:
            raise CutoutUnreadable(f"gzip stamp inflates past {MAX_INFLATED} bytes")
    if raw[:9] != b"SIMPLE  =":
        raise CutoutUnreadable("not a FITS file")
    _, img, at = _hdu(raw, 0)
    if img is None:
        raise CutoutUnreadable("primary HDU holds no 2-D image")
    var = None
    while at + BLOCK <= len(raw):
        hdr, data, at = _hdu(raw, at)
        if hdr.get("EXTNAME", "").upper() in ("UNCERT", "VARIANCE"):
            var = data if data is not None and data.shape == img.shape else None
            break
    return img, var


def noise_units(img: npt.NDArray[np.float32], var: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
    """``arcsinh(img / (IMG_SOFTENING * sigma))``, cropped or padded to IMG_SIZE; NaN pixels -> 0."""
    sigma = np.nan
    if var is not None:  # variance planes are smooth: their mean is the noise (a median costs 3x)
        good = var[np.isfinite(var) & (var > 0)]
        sigma = float(np.sqrt(good.mean())) if good.size else np.nan
    if not sigma > 0:
        fin = img[np.isfinite(img)]
        sigma = float(1.4826 * np.median(np.abs(fin - np.median(fin)))) if fin.size else np.nan
    if not sigma > 0:
        sigma = 1.0
    out = np.zeros((IMG_SIZE, IMG_SIZE), np.float32)
    ny, nx = img.shape
    y0, x0 = (ny - IMG_SIZE) // 2, (nx - IMG_SIZE) // 2
    src = img[max(y0, 0) : max(y0, 0) + IMG_SIZE, max(x0, 0) : max(x0, 0) + IMG_SIZE]
    oy, ox = max(-y0, 0), max(-x0, 0)
    out[oy : oy + src.shape[0], ox : ox + src.shape[1]] = np.arcsinh(src / (IMG_SOFTENING * sigma))
    if not np.isfinite(out).all():
        out[~np.isfinite(out)] = 0.0
    return out


def image_tokens(buf: npt.NDArray[np.uint8], spans: npt.NDArray[np.int64]) -> ImageTokens:
    """Image tokens from stamps laid in ``buf``.

    Parameters
    ----------
    buf : ndarray of uint8
        The bytes the stamps lie in (the decoder's body buffer).
    spans : ndarray of int64, shape (n, 2 * len(IMG_CHANNELS))
        ``(start, length)`` of each channel's stamp in ``buf``, in :data:`IMG_CHANNELS` order;
        ``start < 0`` where the alert has no such stamp (null cutout).
    """
    n = spans.shape[0]
    out = ImageTokens.empty(n)
    bad = 0
    for i in fast_tokens(buf, np.ascontiguousarray(spans), out.img, out.mask, IMG_SOFTENING).tolist():
        try:
            for c in range(len(IMG_CHANNELS)):
                s, ln = int(spans[i, 2 * c]), int(spans[i, 2 * c + 1])
                out.img[i, c] = noise_units(*read_cutout(buf[s : s + ln].tobytes()))
        except CutoutUnreadable:
            out.img[i] = 0.0
            bad += 1
            continue
        out.mask[i] = True
    return ImageTokens(out.img, out.mask, bad)


def stamps_to_tokens(stamps: Any) -> npt.NDArray[np.float32]:
    """Image tokens (n, C, S, S) from rendered stamps in nJy (:class:`broker.sim.cutouts.Cutouts`:
    an attribute per channel and ``var_<channel>``, each (n, S, S); the renderer, training)."""
    n = getattr(stamps, IMG_CHANNELS[0]).shape[0]
    img = np.empty((n, len(IMG_CHANNELS), IMG_SIZE, IMG_SIZE), np.float32)
    for c, name in enumerate(IMG_CHANNELS):
        pix, var = getattr(stamps, name), getattr(stamps, f"var_{name}")
        sigma = np.sqrt(var.reshape(n, -1).mean(axis=1)).astype(np.float32)
        img[:, c] = np.arcsinh(pix / (IMG_SOFTENING * np.maximum(sigma, 1e-12))[:, None, None])
    return img
