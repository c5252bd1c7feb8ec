"""Optional 31x31 FITS cutouts (difference, science, template) for simulated alerts.

A Gaussian PSF (FWHM 0.7 arcsec at 0.2 arcsec/pixel) scaled to the point's fluxes,
plus white noise matching its flux error.  Written with a minimal FITS writer: one
primary HDU, ``BITPIX=-32``, big-endian, padded to 2880-byte blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .avro_columns import varint

SIZE = 31
_yy, _xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
_SIGMA_PIX = 0.7 / 2.355 / 0.2
PSF = np.exp(-0.5 * (_xx**2 + _yy**2) / _SIGMA_PIX**2)
PSF /= PSF.sum()
NOISE_PER_PIX = 1.0 / np.sqrt((PSF**2).sum())  # flux error -> per-pixel sigma factor


def fits_bytes(img: np.ndarray, header: dict[str, Any] | None = None) -> bytes:
    """Serialise a 2-D float image as a single-HDU FITS file."""
    cards = [("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", img.shape[1]),
             ("NAXIS2", img.shape[0]), *(header or {}).items()]
    out = []
    for k, v in cards:
        val = ("T" if v else "F") if isinstance(v, bool) else repr(v) if not isinstance(
            v, str) else f"'{v}'"
        out.append(f"{k:<8}= {val:>20}".ljust(80))
    out.append("END".ljust(80))
    head = "".join(out).encode("ascii")
    head += b" " * (-len(head) % 2880)
    data = np.ascontiguousarray(img, dtype=">f4").tobytes()
    return head + data + b"\x00" * (-len(data) % 2880)


def make_cutouts(ph: Any, p: int, rng: np.random.Generator) -> bytes:
    """Avro bytes of the three nullable cutout fields for point ``p`` of ``ph``."""
    sig = float(ph.flux_err[p]) / NOISE_PER_PIX
    hdr = {"MJD-OBS": float(ph.mjd[p]), "BUNIT": "nJy"}
    parts = []
    for f in (ph.flux[p], ph.sci_flux[p], ph.template_flux[p]):
        img = PSF * float(f) + rng.normal(0.0, sig, PSF.shape)
        b = fits_bytes(img.astype(np.float32), hdr)
        parts.append(b"\x02" + varint(len(b)) + b)
    return b"".join(parts)
