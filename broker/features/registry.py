"""Registry of summary features: name, unit, NaN rule and token transform.

Every column of :attr:`broker.features.Features.summary` is described here, in
order. Feature ``k`` of the summary array is ``FEATURES[k]``; the ``feature_id``
of a summary-feature token (see :mod:`broker.tokens`) is the same ``k``.

Statistics are computed on difference-image PSF *fluxes* (nJy), not magnitudes:
Rubin difference fluxes are often negative. They are computed once over all
bands together (prefix ``all_``) and once per band (prefix ``u_`` ... ``y_``).
Only rows with a finite time, flux and error, an error > 0 and a known band are
used; repeated (time, band) rows are kept once (the detection wins).
"""

from __future__ import annotations

from typing import NamedTuple

from broker.batch import BANDS


class FeatureSpec(NamedTuple):
    """Description of one summary feature.

    Attributes
    ----------
    name : str
        Column name in the summary array.
    unit : str
        Physical unit of the raw value (``""`` for dimensionless).
    nan_rule : str
        When the value is NaN.
    transform : str
        Transform applied for the ``feat`` tokens: ``"identity"``, ``"asinh"``
        (arcsinh, for unbounded flux-like values) or ``"slog1p"``
        (sign(x) log1p(|x|), for times and rates).
    """

    name: str
    unit: str
    nan_rule: str
    transform: str


#: Statistics computed per group of points (one band, or all bands), in kernel order.
#: Tuples are (suffix, unit, minimum number of points, token transform).
STAT_SPECS: tuple[tuple[str, str, int, str], ...] = (
    ("amplitude", "nJy", 1, "asinh"),
    ("beyond_1_std", "", 2, "identity"),
    ("beyond_2_std", "", 2, "identity"),
    ("cusum", "", 2, "identity"),
    ("eta", "", 2, "slog1p"),
    ("excess_variance", "", 2, "asinh"),
    ("inter_percentile_range_25", "nJy", 1, "asinh"),
    ("inter_percentile_range_10", "nJy", 1, "asinh"),
    ("kurtosis", "", 4, "asinh"),
    ("linear_fit_slope", "nJy/day", 3, "asinh"),
    ("linear_fit_slope_sigma", "nJy/day", 3, "asinh"),
    ("linear_fit_reduced_chi2", "", 3, "slog1p"),
    ("linear_trend", "nJy/day", 2, "asinh"),
    ("linear_trend_sigma", "nJy/day", 3, "asinh"),
    ("linear_trend_noise", "nJy", 3, "asinh"),
    ("magnitude_percentage_ratio_40_5", "", 1, "identity"),
    ("magnitude_percentage_ratio_20_5", "", 1, "identity"),
    ("maximum_slope", "nJy/day", 2, "asinh"),
    ("mean", "nJy", 1, "asinh"),
    ("median", "nJy", 1, "asinh"),
    ("median_absolute_deviation", "nJy", 1, "asinh"),
    ("percent_amplitude", "nJy", 1, "asinh"),
    ("reduced_chi2", "", 2, "slog1p"),
    ("skew", "", 3, "asinh"),
    ("standard_deviation", "nJy", 2, "asinh"),
    ("stetson_K", "", 2, "identity"),
    ("weighted_mean", "nJy", 1, "asinh"),
    ("n_points", "", 0, "slog1p"),
)
N_STATS = len(STAT_SPECS)

#: Bazin fit outputs per band, in kernel order: (suffix, unit, token transform).
BAZIN_SPECS: tuple[tuple[str, str, str], ...] = (
    ("bazin_amplitude", "nJy", "asinh"),
    ("bazin_baseline", "nJy", "asinh"),
    ("bazin_reference_time", "day (relative to alert mjd)", "slog1p"),
    ("bazin_rise_time", "day", "slog1p"),
    ("bazin_fall_time", "day", "slog1p"),
    ("bazin_reduced_chi2", "", "slog1p"),
)
N_BAZIN = len(BAZIN_SPECS)

#: Villar fit outputs per band, in kernel order: (suffix, unit, token transform).
VILLAR_SPECS: tuple[tuple[str, str, str], ...] = (
    ("villar_amplitude", "nJy", "asinh"),
    ("villar_baseline", "nJy", "asinh"),
    ("villar_reference_time", "day (relative to alert mjd)", "slog1p"),
    ("villar_rise_time", "day", "slog1p"),
    ("villar_fall_time", "day", "slog1p"),
    ("villar_plateau_rel_amplitude", "", "identity"),
    ("villar_plateau_duration", "day", "slog1p"),
    ("villar_reduced_chi2", "", "slog1p"),
)
N_VILLAR = len(VILLAR_SPECS)

#: Colors at peak between adjacent bands (first minus second, AB mag).
COLOR_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5))

_STAT_NAN = (
    "NaN when the group has fewer than {k} usable points, or when the statistic "
    "divides by zero (constant fluxes, zero time span)"
)


def _build() -> tuple[FeatureSpec, ...]:
    specs: list[FeatureSpec] = []
    for prefix in ("all",) + BANDS:
        for suffix, unit, kmin, tr in STAT_SPECS:
            rule = "never NaN (0 when no usable point)" if kmin == 0 else _STAT_NAN.format(k=kmin)
            specs.append(FeatureSpec(f"{prefix}_{suffix}", unit, rule, tr))
    for band in BANDS:
        for suffix, unit, tr in BAZIN_SPECS:
            specs.append(
                FeatureSpec(
                    f"{band}_{suffix}",
                    unit,
                    "NaN when the Bazin fit is disabled (FeatureConfig.bazin), the band has "
                    "fewer than 6 usable points, the time span is zero, or the fit does not "
                    "converge to finite parameters",
                    tr,
                )
            )
    for band in BANDS:
        for suffix, unit, tr in VILLAR_SPECS:
            specs.append(
                FeatureSpec(
                    f"{band}_{suffix}",
                    unit,
                    "NaN when the Villar fit is disabled (FeatureConfig.villar, off by default), "
                    "the band has fewer than 8 usable points, the time span is zero, or the fit "
                    "does not converge to finite parameters",
                    tr,
                )
            )
    for b1, b2 in COLOR_PAIRS:
        specs.append(
            FeatureSpec(
                f"color_{BANDS[b1]}_{BANDS[b2]}_at_peak",
                "mag",
                "NaN unless both bands have a point within the color window of the peak "
                "time, and both interpolated fluxes are > 0",
                "identity",
            )
        )
    specs += [
        FeatureSpec("peak_band", "", "NaN when no usable point; else band index of the peak", "identity"),
        FeatureSpec(
            "rise_rate",
            "mag/day",
            "NaN unless the peak band has a positive-flux point before the peak",
            "slog1p",
        ),
        FeatureSpec(
            "decline_rate",
            "mag/day",
            "NaN unless the peak band has a positive-flux point after the peak",
            "slog1p",
        ),
        FeatureSpec(
            "periodogram_period",
            "day",
            "NaN with fewer than 10 usable points or a baseline under 3 cycles of the shortest period searched",
            "slog1p",
        ),
        FeatureSpec(
            "periodogram_power",
            "",
            "NaN with fewer than 10 usable points or a baseline under 3 cycles of the shortest period searched",
            "identity",
        ),
        FeatureSpec(
            "log10_flux_scale",
            "log10(nJy)",
            "never NaN: the per-object token flux scale (1 nJy when no usable point)",
            "identity",
        ),
    ]
    return tuple(specs)


#: All summary features in column order.
FEATURES: tuple[FeatureSpec, ...] = _build()
#: Names of :data:`FEATURES`, in column order.
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
#: Column index of each feature name.
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Registry as plain (name, unit, nan_rule) triples.
REGISTRY: tuple[tuple[str, str, str], ...] = tuple((f.name, f.unit, f.nan_rule) for f in FEATURES)

#: Column offsets of each block in the summary array.
STATS_OFFSET = 0
BAZIN_OFFSET = N_STATS * (1 + len(BANDS))
VILLAR_OFFSET = BAZIN_OFFSET + N_BAZIN * len(BANDS)
EXTRA_OFFSET = VILLAR_OFFSET + N_VILLAR * len(BANDS)
N_FEATURES = len(FEATURES)
