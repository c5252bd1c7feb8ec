"""Token layout: the contract between the featurizers (``broker.features``) and the models.

Every modality is a padded float32 array plus an explicit boolean mask, so a
missing modality is simply all-masked tokens. Shapes, for a batch of ``n``
alerts:

* light-curve tokens ``lc`` : (n, L, len(LC_FIELDS)), mask ``lc_mask`` : (n, L)
* host tokens ``host`` : (n, H, len(HOST_FIELDS)), mask ``host_mask`` : (n, H)
* summary-feature tokens ``feat`` : (n, F, len(FEAT_FIELDS)), mask ``feat_mask`` : (n, F)

``mask == True`` marks a real token. Padded tokens are all zeros and must not
influence any output. Categorical fields (``band``, ``kind``, ``feature_id``)
are stored as floats holding small integers; models cast and embed them.

Bump :data:`TOKEN_LAYOUT_VERSION` whenever a field's meaning changes: model
checkpoints record it and refuse to load against another layout.
"""

from __future__ import annotations

TOKEN_LAYOUT_VERSION = 1

#: One token per photometry row (detection or forced).
#:
#: ``dt``           signed log1p of (mjd - reference mjd) in days; the reference is the
#:                  alert's triggering diaSource time, so hours and years both resolve.
#: ``band``         band index 0..5 (u..y), see ``broker.batch.BANDS``.
#: ``flux``         arcsinh(flux / scale), scale a per-object flux scale in nJy
#:                  (given to the model separately as the ``log10_flux_scale`` feature):
#:                  the median ``flux_err`` of the object's usable rows (1 nJy if none),
#:                  so tokens are linear around the noise level and logarithmic above.
#: ``flux_err``     flux_err / scale.
#: ``is_detection`` 1.0 for a diaSource row, 0.0 for forced photometry.
LC_FIELDS: tuple[str, ...] = ("dt", "band", "flux", "flux_err", "is_detection")

#: Host-galaxy tokens: one per band with a magnitude, plus a separation and a DLR token.
#:
#: ``kind``   0 = AB magnitude in ``band``, 1 = separation (arcsec), 2 = separation in
#:            units of the directional light radius (DLR; dimensionless).
#: ``band``   band index 0..5 for kind 0, -1 otherwise.
#: ``value``  magnitude (kind 0), arcsec (kind 1) or DLR units (kind 2).
#: ``error``  magnitude error for kind 0, 0 otherwise.
HOST_FIELDS: tuple[str, ...] = ("kind", "band", "value", "error")
HOST_KIND_MAG, HOST_KIND_SEP, HOST_KIND_DLR = 0, 1, 2
#: Host token slots: six magnitudes (ugrizy), then separation, then DLR.
HOST_MAX_TOKENS = 8

#: Summary-feature tokens: one per finite feature; NaN features are masked.
#: ``feature_id`` indexes the feature-name list of ``broker.features`` and ``value``
#: is the feature value after the documented per-feature transform.
FEAT_FIELDS: tuple[str, ...] = ("feature_id", "value")

#: Default maximum number of light-curve tokens kept per alert.
LC_MAX_TOKENS = 128

#: Image tokens (cutouts). Rubin ships three 30 x 30 FITS cutouts per alert; they enter the model
#: as ``img`` (n, len(IMG_CHANNELS), IMG_SIZE, IMG_SIZE) float32 and ``img_mask`` (n,) bool (True =
#: the alert's cutouts were read). Pixels are ``arcsinh(pixel / (IMG_SOFTENING * sigma))`` where
#: ``sigma`` is the image's noise (from its variance plane, else a robust estimate), so every
#: channel is in noise units: linear near the noise, logarithmic on a bright host. The model cuts
#: each image into (IMG_SIZE // IMG_PATCH)**2 patch tokens. Layout and normalisation:
#: :mod:`broker.cutouts`.
IMG_CHANNELS: tuple[str, ...] = ("difference", "science", "template")
IMG_SIZE = 30
IMG_PATCH = 6
IMG_SOFTENING = 3.0
