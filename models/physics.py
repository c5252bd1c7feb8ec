"""Physics anomaly score: peak luminosity and rest-frame time scales at the host photo-z.

The forest (:mod:`models.anomaly`) and the neighbour bank read a classifier's context, in which a
kilonova looks like a fast SN II. This score reads what separates them physically: how luminous
the transient is at its host's distance and how fast it rises and fades in its own frame. For
every alert with a served host photo-z ``z`` (the host-only ``q50``; the photo-z gate needs three
host magnitudes) the inputs (:data:`INPUTS`) are

* ``abs_mag``: the peak absolute magnitude, ``m_peak - mu(z) + 2.5 log10(1 + z)``, from the
  brightest light-curve row (``m = 31.4 - 2.5 log10(flux / nJy)``, the AB zero point in nJy) and
  a flat LCDM distance modulus (:attr:`PhysicsConfig.h0`, :attr:`PhysicsConfig.om0`);
* ``log_z``: the photo-z itself, so that the density is luminosity *at* a distance (the training
  alerts' luminosity function times their selection);
* ``log_rise_rate`` and ``log_decline_rate``: ``log10(0.01 + (1 + z) rate)`` of the registry's
  ``rise_rate`` / ``decline_rate`` (mag per rest-frame day);
* ``log_bazin_rise`` and ``log_bazin_fall``: ``log10`` of the peak band's Bazin rise and fall
  times divided by ``1 + z`` (rest-frame days, clipped to 0.01-1000).

A model uses the subset named by :attr:`PhysicsConfig.inputs`. Summary features are read from the
feature tokens by their registry id and name (:data:`broker.features.registry.FEATURE_INDEX`),
with each feature's token transform undone, so a registry change cannot shift them.

The density is a Gaussian mixture per *cell*: detection-count stratum (as the forest) times the
pattern of optional inputs that are defined (``abs_mag`` and ``log_z`` are required; a young
alert often has no decline rate yet). A cell with too few training alerts borrows the fitted cell
of the same stratum with the largest subset of its inputs. The mixture is fitted with
scikit-learn on the training alerts and exported to buffers, so it travels in the checkpoint.
An alert scores ``-log10`` of the fraction of training alerts of its cell whose density is at
most its own (:func:`models.anomaly.tail_score`), comparable with the forest score. Without a
photo-z, a positive peak, enough detections or a fitted cell, the score is NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from broker.batch import BANDS
from broker.features.registry import FEATURE_INDEX, FEATURES
from broker.tokens import LC_FIELDS
from models.anomaly import tail_score
from models.physics_fit import N_REQUIRED as _REQUIRED
from models.physics_fit import fit_cells

#: Every input the physics density can read, in this order; the first two are required.
INPUTS: tuple[str, ...] = ("abs_mag", "log_z", "log_rise_rate", "log_decline_rate", "log_bazin_rise",
                           "log_bazin_fall")
#: How the physics score joins the served score (``off``: not at all, the default).
SCORES: tuple[str, ...] = ("off", "physics", "max", "mean")
#: AB magnitude of 1 nJy: 2.5 log10(3631 Jy / 1 nJy).
AB_ZP_NJY = 2.5 * math.log10(3631e9)
_FLUX, _DET = LC_FIELDS.index("flux"), LC_FIELDS.index("is_detection")
_SCALAR = ("log10_flux_scale", "peak_band", "rise_rate", "decline_rate")
_PER_BAND = ("bazin_rise_time", "bazin_fall_time")
#: Registry features read, by name: the scalars, then each per-band one for u..y.
FEATURES_READ: tuple[str, ...] = _SCALAR + tuple(f"{b}_{s}" for s in _PER_BAND for b in BANDS)


@dataclass(frozen=True)
class PhysicsConfig:
    """Physics density settings (stored in the model config; fix the buffer shapes).

    Attributes
    ----------
    score : str
        One of :data:`SCORES`: how the physics score joins the served one.
    inputs : tuple of str
        Inputs used, a subset of :data:`INPUTS` that starts with ``abs_mag``, ``log_z``.
    edges : tuple of int
        Detection counts that open a new stratum.
    n_components : int
        Gaussians per cell.
    n_ref : int
        Sorted training scores kept per cell for the tail calibration.
    min_rows : int
        Training alerts a cell needs to get its own mixture.
    min_detections : int
        Fewer detections: NaN score.
    h0, om0 : float
        Flat LCDM cosmology of the distance modulus.
    z_min : float
        Photo-z floor (the distance modulus diverges at 0).
    """

    score: str = "off"
    inputs: tuple[str, ...] = INPUTS[:4]
    edges: tuple[int, ...] = (3, 11)
    n_components: int = 6
    n_ref: int = 512
    min_rows: int = 200
    min_detections: int = 1
    h0: float = 70.0
    om0: float = 0.3
    z_min: float = 0.01

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"physics score {self.score!r} is not one of {', '.join(SCORES)}")
        if self.inputs[:_REQUIRED] != INPUTS[:_REQUIRED] or not set(self.inputs) <= set(INPUTS) \
                or len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"physics inputs {self.inputs} must start with {INPUTS[:_REQUIRED]} and be "
                             f"distinct names of {INPUTS}")

    @property
    def n_cells(self) -> int:
        """Strata times patterns of optional inputs."""
        return (len(self.edges) + 1) << (len(self.inputs) - _REQUIRED)

    def to_dict(self) -> dict:
        """Checkpoint-safe dict (tuples as lists)."""
        d = asdict(self)
        return {**d, "inputs": list(self.inputs), "edges": list(self.edges)}

    @classmethod
    def from_dict(cls, d: dict) -> PhysicsConfig:
        """Inverse of :meth:`to_dict` (an empty dict: the default, off)."""
        return cls(**{**d, **{k: tuple(d[k]) for k in ("inputs", "edges") if k in d}})


def distance_modulus(z: np.ndarray, h0: float, om0: float) -> np.ndarray:
    """Flat LCDM distance modulus (trapezoid integral of ``1/E(z)`` on a 0.0005 grid), mag."""
    z = np.asarray(z, np.float64)
    grid = np.linspace(0.0, max(float(z.max(initial=0.0)), 1e-3) + 1e-3, 20001)
    inv_e = 1.0 / np.sqrt(om0 * (1 + grid) ** 3 + 1 - om0)
    dc = np.concatenate([[0.0], np.cumsum(0.5 * (inv_e[1:] + inv_e[:-1]) * np.diff(grid))])
    dl_mpc = np.interp(z, grid, dc) * 299792.458 / h0 * (1 + z)
    return 5 * np.log10(np.maximum(dl_mpc, 1e-9) * 1e5)


def _inverse_transform(value: Tensor, kinds: Tensor) -> Tensor:
    """Undo the token transforms (0 identity, 1 asinh, 2 slog1p) of :mod:`broker.features.core`."""
    return torch.where(kinds == 1, torch.sinh(value),
                       torch.where(kinds == 2, torch.sign(value) * torch.expm1(value.abs()), value))


class PhysicsDensity(nn.Module):
    """Per-cell Gaussian mixtures over physics inputs, and their tail calibration (all buffers).

    Buffers per cell ``c``: ``log_norm[c, k]`` (log weight + log det - d/2 log 2 pi of component
    ``k``; -inf for an unused one), ``means[c, k]``, ``prec_chol[c, k]`` (zero rows and columns
    outside the cell's inputs), ``use[c]`` (the fitted cell it is scored with, -1 none) and
    ``ref[c]`` (sorted training scores); shared ``shift``/``scale`` standardise the inputs.
    """

    log_norm: Tensor
    means: Tensor
    prec_chol: Tensor
    use: Tensor
    ref: Tensor
    shift: Tensor
    scale: Tensor
    mu_table: Tensor
    feature_ids: Tensor
    transforms: Tensor

    def __init__(self, cfg: PhysicsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, k, d = cfg.n_cells, cfg.n_components, len(cfg.inputs)
        self.register_buffer("log_norm", torch.full((c, k), -math.inf))
        self.register_buffer("means", torch.zeros(c, k, d))
        self.register_buffer("prec_chol", torch.zeros(c, k, d, d))
        self.register_buffer("use", torch.full((c,), -1, dtype=torch.long))
        self.register_buffer("ref", torch.zeros(c, cfg.n_ref))
        self.register_buffer("shift", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))
        # derived from the config and the registry, not stored: mu(z) on a 0.001 grid to z = 8
        self.z_step = 1e-3
        mu = distance_modulus(np.arange(8001) * self.z_step, cfg.h0, cfg.om0)
        self.register_buffer("mu_table", torch.as_tensor(mu, dtype=torch.float32), persistent=False)
        ids = [FEATURE_INDEX[name] for name in FEATURES_READ]
        kinds = [("identity", "asinh", "slog1p").index(FEATURES[i].transform) for i in ids]
        self.register_buffer("feature_ids", torch.as_tensor(ids), persistent=False)
        self.register_buffer("transforms", torch.as_tensor(kinds), persistent=False)

    def _mu(self, z: Tensor) -> Tensor:
        """Distance modulus at ``z`` (n,), linear between table rows."""
        pos = (z / self.z_step).clamp(0, len(self.mu_table) - 1.001)
        i = pos.floor().long()
        w = pos - i
        return self.mu_table[i] * (1 - w) + self.mu_table[i + 1] * w

    def features(self, feat: Tensor, feat_mask: Tensor) -> Tensor:
        """Raw values (n, len(FEATURES_READ)) of :data:`FEATURES_READ` from feature tokens, NaN if absent."""
        n_reg = len(FEATURES)
        fid = feat[..., 0].round().long()
        fid = torch.where(feat_mask & (fid >= 0) & (fid < n_reg), fid, n_reg)  # the rest: a spare column
        table = torch.full((feat.shape[0], n_reg + 1), float("nan"), device=feat.device)
        table.scatter_(1, fid, feat[..., 1].float())
        return _inverse_transform(table[:, self.feature_ids], self.transforms)

    def inputs(self, lc: Tensor, lc_mask: Tensor, feat: Tensor, feat_mask: Tensor, z: Tensor
               ) -> tuple[Tensor, Tensor]:
        """Physics inputs (n, len(cfg.inputs)), NaN where undefined, and detection counts (n,)."""
        f = self.features(feat, feat_mask)
        col = {name: f[:, j] for j, name in enumerate(_SCALAR)}
        n = lc.shape[0]
        det = ((lc[..., _DET] > 0.5) & lc_mask).sum(1) if lc.shape[1] else torch.zeros(n, dtype=torch.long)
        flux = torch.where(lc_mask, torch.sinh(lc[..., _FLUX].float()), -math.inf) if lc.shape[1] \
            else torch.full((n, 1), -math.inf, device=lc.device)
        peak = flux.amax(1) * torch.pow(10.0, col["log10_flux_scale"])
        zc = z.float().nan_to_num(self.cfg.z_min).clamp(min=self.cfg.z_min)
        ok = torch.isfinite(z) & (peak > 0) & (det >= self.cfg.min_detections)
        one_z = 1 + zc
        abs_mag = AB_ZP_NJY - 2.5 * torch.log10(peak.clamp(min=1e-30)) - self._mu(zc) + 2.5 * torch.log10(one_z)
        band = col["peak_band"].nan_to_num(-1).round().long()
        per_band = f[:, len(_SCALAR):].view(n, len(_PER_BAND), len(BANDS))
        at_peak = per_band.gather(2, band.clamp(0, len(BANDS) - 1)[:, None, None].expand(n, len(_PER_BAND), 1))[..., 0]
        at_peak = torch.where((band >= 0)[:, None], at_peak, float("nan"))
        rate = lambda r: torch.log10(0.01 + (r * one_z).clamp(min=0))  # noqa: E731
        times = torch.log10((at_peak / one_z[:, None]).clamp(0.01, 1000.0))
        cols = {"abs_mag": abs_mag, "log_z": torch.log10(zc), "log_rise_rate": rate(col["rise_rate"]),
                "log_decline_rate": rate(col["decline_rate"]), "log_bazin_rise": times[:, 0],
                "log_bazin_fall": times[:, 1]}
        x = torch.stack([cols[name] for name in self.cfg.inputs], 1)
        return torch.where(ok[:, None], x, float("nan")), det

    def cells(self, x: Tensor, n_det: Tensor) -> Tensor:
        """Cell index (n,): stratum of ``n_det`` times the pattern of defined optional inputs."""
        edges = torch.as_tensor(self.cfg.edges, device=n_det.device, dtype=n_det.dtype)
        stratum = torch.bucketize(n_det, edges, right=True)
        bits = torch.isfinite(x[:, _REQUIRED:]).long() << torch.arange(x.shape[1] - _REQUIRED, device=x.device)
        return (stratum << (x.shape[1] - _REQUIRED)) + bits.sum(1)

    def neg_log_density(self, x: Tensor, cell: Tensor) -> Tensor:
        """``-log p(x)`` (n,) under the mixture of each row's cell (undefined inputs ignored)."""
        z = torch.nan_to_num((x - self.shift) / self.scale)
        y = torch.einsum("nkd,nkde->nke", z[:, None, :] - self.means[cell], self.prec_chol[cell])
        return -torch.logsumexp(self.log_norm[cell] - 0.5 * (y * y).sum(-1), 1)

    def inputs_fp32(self, lc: Tensor, lc_mask: Tensor, feat: Tensor, feat_mask: Tensor, z: Tensor
                    ) -> tuple[Tensor, Tensor]:
        """:meth:`inputs` computed in float32 even under autocast (bf16 would round the magnitudes)."""
        with torch.autocast(lc.device.type, enabled=False):
            return self.inputs(lc.float(), lc_mask, feat.float(), feat_mask, z.float())

    def forward(self, lc: Tensor, lc_mask: Tensor, feat: Tensor, feat_mask: Tensor, z: Tensor) -> Tensor:
        """``-log10`` of the fraction of same-cell training alerts at most as probable, (n,); NaN: no score."""
        return self.score(*self.inputs_fp32(lc, lc_mask, feat, feat_mask, z))

    def score(self, x: Tensor, n_det: Tensor) -> Tensor:
        """The score (n,) of inputs ``x`` and detection counts ``n_det`` from :meth:`inputs_fp32`.

        Computed in float32 even under autocast (bf16 would round the densities).
        """
        with torch.autocast(x.device.type, enabled=False):
            use = self.use[self.cells(x, n_det)]
            ok = torch.isfinite(x[:, 0]) & (use >= 0)
            cell = use.clamp(min=0)
            score = tail_score(self.neg_log_density(x, cell), self.ref[cell])
        return torch.where(ok, score, float("nan"))

    @torch.no_grad()
    def fit(self, lc: np.ndarray, lc_mask: np.ndarray, feat: np.ndarray, feat_mask: np.ndarray, z: np.ndarray,
            seed: int = 0) -> dict[str, float]:
        """Fit every cell's mixture on training alerts (NaN ``z``: left out); returns fit figures."""
        x, n_det = self.inputs(*(torch.as_tensor(a) for a in (lc, lc_mask, feat, feat_mask, z)))
        cell = self.cells(x, n_det)
        keep = torch.isfinite(x[:, 0])
        state, info = fit_cells(x[keep].numpy().astype(np.float64), cell[keep].numpy(), self.cfg, seed)
        for name, value in state.items():
            getattr(self, name).copy_(torch.as_tensor(value))
        xk = x[keep].to(self.ref.device)
        own = self.use[cell[keep].to(self.ref.device)]
        nll = self.neg_log_density(xk, own.clamp(min=0)).cpu().numpy()
        qs = (np.arange(self.cfg.n_ref) + 0.5) / self.cfg.n_ref
        for c in np.unique(own.cpu().numpy()):
            if c >= 0:
                self.ref[c] = torch.as_tensor(np.quantile(nll[own.cpu().numpy() == c], qs), dtype=torch.float32)
        return {**info, "physics_rows": float(keep.sum())}
