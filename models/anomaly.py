"""Anomaly score: isolation forests on the model's context plus light-curve descriptors.

The context of an alert is everything the heads see: the encoder embedding, the
host-photometry path (which carries distance, i.e. photo-z) and the class
logits. Why this design (measured in ``docs/models.md``): the class-conditional
Mahalanobis distance of the embedding ranked held-out classes at AUROC 0.77,
because a classifier embedding keeps only what separates the known classes (a
PISN lands confidently on the SLSN cluster). An isolation forest over the
embedding and seven light-curve descriptors the classifier has no reason to
keep (how long the source stays significant, rise and fall spans, peak
signal-to-noise) reaches 0.87; adding the host path, so that brightness and
time scales can be read against distance, 0.90. This is the Fink/SNAD recipe
(isolation forest) applied to a learned latent, as in the multi-class isolation
forest and Villar et al. 2021.

The forest is fitted with scikit-learn at training time and exported into
fixed-size heap arrays (node ``i`` has children ``2i+1`` and ``2i+2``), so that
scoring is a few batched ``gather`` operations in torch, on CPU or GPU, and the
trees travel in the checkpoint's ``state_dict``.

Alerts arrive young: a two-detection kilonova has to be compared with
two-detection supernovae, not with finished light curves. So there is one forest
per detection-count stratum (``ForestConfig.edges``: 1-2, 3-10, 11+ by default),
each fitted on the training alerts (full light curves and early cuts) of its
stratum. Scores are reported as ``-log10`` of the fraction of training alerts of
the same stratum at least as strange, so ``anomaly > 2`` means "stranger than
99 % of training alerts with a similar number of detections".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from broker.tokens import LC_FIELDS
from models.forest_kernel import cpu_paths

#: Names of :func:`lc_descriptors` columns.
DESCRIPTORS: tuple[str, ...] = ("log_n_det", "log_det_span", "log_rise_span", "log_fall_span",
                                "log_peak_snr", "log_signif_span", "log_n_signif")
_DT, _FLUX, _ERR, _DET = (LC_FIELDS.index(k) for k in ("dt", "flux", "flux_err", "is_detection"))
_BIG = 1e9


@dataclass(frozen=True)
class ForestConfig:
    """Isolation-forest size (stored in the model config; fixes buffer shapes).

    Attributes
    ----------
    edges : tuple of int
        Detection counts that open a new stratum (one forest per stratum).
    n_trees : int
        Trees per forest.
    max_samples : int
        Training rows per tree; tree depth is ``ceil(log2(max_samples))``.
    n_ref : int
        Sorted training scores kept to turn scores into tail fractions.
    """

    edges: tuple[int, ...] = (3, 11)
    n_trees: int = 128
    max_samples: int = 2048
    n_ref: int = 2048

    @property
    def depth(self) -> int:
        """Depth limit of every tree (as scikit-learn)."""
        return max(int(math.ceil(math.log2(self.max_samples))), 1)


def lc_descriptors(lc: Tensor, lc_mask: Tensor) -> Tensor:
    """Seven light-curve descriptors per alert, (n, 7), from light-curve tokens.

    Parameters
    ----------
    lc : Tensor (n, L, 5)
        Light-curve tokens (layout :data:`broker.tokens.LC_FIELDS`).
    lc_mask : Tensor of bool (n, L)
        ``True`` = real token.

    Returns
    -------
    Tensor (n, 7)
        :data:`DESCRIPTORS`: log of the number of detections; log10(1 + days) of
        the detection span, first detection to brightest detection and brightest
        to last; log10 of the brightest detection in units of the object's noise
        scale; log10(1 + days) between the first and last row (forced photometry
        included) at SNR > 3, and the log number of such rows. Zeros where a
        light curve has no detection (such alerts are gated off).
    """
    return _describe(lc, lc_mask)[0]


def _describe(lc: Tensor, lc_mask: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`lc_descriptors` (n, 7) and the detection count (n,) it is built on."""
    if lc.shape[1] == 0:  # no light-curve tokens in this batch at all
        n = lc.shape[0]
        return (lc.new_zeros(n, len(DESCRIPTORS), dtype=torch.float32),
                torch.zeros(n, dtype=torch.long, device=lc.device))
    lc = torch.nan_to_num(lc.float())
    dt = lc[..., _DT]
    t = torch.sign(dt) * torch.expm1(dt.abs())
    flux = torch.sinh(lc[..., _FLUX])
    det = (lc[..., _DET] > 0.5) & lc_mask
    sig = lc_mask & (flux > 3 * lc[..., _ERR].clamp(min=1e-6))
    t_first = torch.where(det, t, _BIG).amin(1)
    t_last = torch.where(det, t, -_BIG).amax(1)
    peak, ipk = torch.where(det, flux, -_BIG).max(1)
    t_peak = t.gather(1, ipk[:, None])[:, 0]
    s_first = torch.where(sig, t, _BIG).amin(1)
    s_last = torch.where(sig, t, -_BIG).amax(1)
    count = det.sum(1)
    n_det, n_sig = count.float(), sig.sum(1).float()

    def span(a: Tensor, b: Tensor) -> Tensor:
        return torch.log10(1 + (b - a).clamp(min=0))

    out = torch.stack([torch.log1p(n_det), span(t_first, t_last), span(t_first, t_peak),
                       span(t_peak, t_last), torch.log10(peak.clamp(min=1e-3)),
                       torch.where(n_sig > 0, span(s_first, s_last), 0.0), torch.log1p(n_sig)], 1)
    return torch.where((n_det > 0)[:, None], out, 0.0), count


def _avg_path(n: np.ndarray | float) -> np.ndarray:
    """Average path length of an unsuccessful BST search over ``n`` points, c(n)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.where(n > 2, 2.0 * (np.log(np.maximum(n - 1, 1)) + np.euler_gamma)
                   - 2.0 * (n - 1) / np.maximum(n, 1), 0.0)
    return np.where(n == 2, 1.0, out)


def export_forest(forest: object, cfg: ForestConfig) -> tuple[np.ndarray, np.ndarray]:
    """Heap arrays of a fitted ``sklearn.ensemble.IsolationForest``.

    Returns
    -------
    feature : ndarray of int16 (T, 2**(depth+1) - 1)
        Split feature, ``-1`` at leaves (and unused slots).
    value : ndarray of float32 (T, nodes)
        Split threshold at internal nodes; at leaves the path length
        ``depth + c(n_leaf)`` scikit-learn assigns.
    """
    n_nodes = 2 ** (cfg.depth + 1) - 1
    estimators = forest.estimators_  # type: ignore[attr-defined]
    feats = forest.estimators_features_  # type: ignore[attr-defined]
    feature = np.full((len(estimators), n_nodes), -1, np.int16)
    value = np.zeros((len(estimators), n_nodes), np.float32)
    for i, (est, cols) in enumerate(zip(estimators, feats, strict=True)):
        tree = est.tree_
        stack = [(0, 0, 0)]  # (sklearn node, heap slot, depth)
        while stack:
            node, slot, depth = stack.pop()
            left, right = tree.children_left[node], tree.children_right[node]
            if left == -1:
                value[i, slot] = depth + float(_avg_path(tree.n_node_samples[node]))
                continue
            feature[i, slot] = int(cols[tree.feature[node]])
            value[i, slot] = np.float32(tree.threshold[node])
            stack += [(left, 2 * slot + 1, depth + 1), (right, 2 * slot + 2, depth + 1)]
    return feature, value


def tail_score(s: Tensor, ref: Tensor) -> Tensor:
    """``-log10`` of the fraction of reference scores ``ref`` (n, R, sorted) at least ``s`` (n,).

    Between reference quantiles the fraction is interpolated linearly, and
    beyond the strangest one it keeps falling (exponentially, on the scale of
    the last quantile gap), so the score is continuous and never ties.
    """
    n_ref = ref.shape[1]
    j = torch.searchsorted(ref, s[:, None].contiguous())[:, 0].clamp(1, n_ref - 1)
    lo, hi = ref.gather(1, (j - 1)[:, None])[:, 0], ref.gather(1, j[:, None])[:, 0]
    below = (j - 1).float() + ((s - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)
    tail = (n_ref - 0.5 - below) / n_ref
    gap = (ref[:, -1] - ref[:, -2]).clamp(min=1e-6)
    tail = torch.where(s > ref[:, -1], 0.5 / n_ref * torch.exp(-(s - ref[:, -1]) / gap), tail)
    return -torch.log10(tail.clamp(min=1e-30, max=1.0))


class AnomalyForest(nn.Module):
    """Stratified isolation forests over ``x = [descriptors, context]``, standardised.

    All state is buffers, so it rides in the checkpoint: per stratum ``b`` the
    heap arrays ``feature[b]`` (uint8, 255 marks a leaf; int16 and -1 past 254
    inputs) and ``value[b]`` (float16: thresholds and leaf path lengths, halved
    in size; standardised inputs need no more), the
    sorted training scores ``ref[b]``, ``c_norm[b] = c(max_samples)`` and
    ``fitted[b]`` (a stratum without training alerts scores NaN: no reference,
    no claim); shared input ``shift``/``scale``.
    """

    feature: Tensor
    value: Tensor
    shift: Tensor
    scale: Tensor
    ref: Tensor
    c_norm: Tensor
    fitted: Tensor

    def __init__(self, d_in: int, cfg: ForestConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_nodes, n_strata = 2 ** (cfg.depth + 1) - 1, len(cfg.edges) + 1
        small = d_in < 255  # one-byte feature ids: the biggest buffer, halved
        self.leaf = 255 if small else -1
        self.register_buffer("feature", torch.full((n_strata, cfg.n_trees, n_nodes), self.leaf,
                                                   dtype=torch.uint8 if small else torch.int16))
        self.register_buffer("value", torch.zeros(n_strata, cfg.n_trees, n_nodes, dtype=torch.float16))
        self.register_buffer("shift", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.register_buffer("ref", torch.zeros(n_strata, cfg.n_ref))
        self.register_buffer("c_norm", torch.ones(n_strata))
        self.register_buffer("fitted", torch.zeros(n_strata, dtype=torch.bool))

    def stratum(self, n_det: Tensor) -> Tensor:
        """Stratum index (n,) of detection counts ``n_det`` (n,)."""
        edges = torch.as_tensor(self.cfg.edges, device=n_det.device, dtype=n_det.dtype)
        return torch.bucketize(n_det, edges, right=True)

    def _raw(self, ctx: Tensor, lc: Tensor, lc_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Unstandardised forest inputs (n, 7 + c) and strata (n,)."""
        desc, n_det = _describe(lc, lc_mask)
        return torch.cat([desc, ctx.float()], 1), self.stratum(n_det)

    def inputs(self, ctx: Tensor, lc: Tensor, lc_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised forest inputs (n, 7 + c) and strata (n,) from a context (n, c) and tokens."""
        x, strata = self._raw(ctx, lc, lc_mask)
        return (x - self.shift) / self.scale, strata

    def path_score(self, x: Tensor, strata: Tensor) -> Tensor:
        """scikit-learn's score ``2 ** (-mean path / c(max_samples))`` in each row's forest, (n,)."""
        if x.device.type == "cpu":  # the compiled walk (models.forest_kernel)
            path = cpu_paths(self, x, strata)
        else:
            path = self.gather_paths(x, strata)
        return torch.exp2(-path / self.c_norm[strata])

    def gather_paths(self, x: Tensor, strata: Tensor) -> Tensor:
        """Mean path length (n,) as batched gathers, one per level (the GPU walk; the CPU reference)."""
        n, trees = x.shape[0], self.cfg.n_trees
        n_nodes = self.feature.shape[-1]
        # flat offsets of each (row, tree) heap: one 1-D gather per level instead of 3-D indexing
        base = ((strata[:, None] * trees + torch.arange(trees, device=x.device)) * n_nodes).reshape(-1)
        feat, val = self.feature.reshape(-1), self.value.reshape(-1)
        rows = torch.arange(n, device=x.device).repeat_interleave(trees) * x.shape[1]
        xf = x.reshape(-1)
        node = torch.zeros_like(base)
        for _ in range(self.cfg.depth):
            at = base + node
            f = feat[at].long()
            leaf = f == self.leaf
            go_right = (xf[rows + torch.where(leaf, 0, f)] > val[at].float()).long()
            node = torch.where(leaf, node, 2 * node + 1 + go_right)
        return val[base + node].float().view(n, trees).mean(1)

    def forward(self, ctx: Tensor, lc: Tensor, lc_mask: Tensor) -> Tensor:
        """``-log10`` of the tail fraction of same-stratum training alerts at least as strange, (n,)."""
        x, strata = self.inputs(ctx, lc, lc_mask)
        score = tail_score(self.path_score(x, strata), self.ref[strata])
        return torch.where(self.fitted[strata], score, float("nan"))

    def fit(self, ctx: np.ndarray, lc: np.ndarray, lc_mask: np.ndarray, seed: int = 0) -> np.ndarray:
        """Fit the forests on training alerts (rows with >= 1 detection); returns their scores (n,)."""
        from sklearn.ensemble import IsolationForest

        with torch.no_grad():
            xt, st = self._raw(torch.as_tensor(ctx), torch.as_tensor(lc), torch.as_tensor(lc_mask))
        x, strata = xt.numpy(), st.numpy()
        shift, scale = xt.mean(0).numpy(), xt.std(0).numpy()
        scale = np.where(scale > 1e-6, scale, 1.0)
        z = ((x - shift) / scale).astype(np.float32)
        dev = self.feature.device
        self.shift.copy_(torch.as_tensor(shift, device=dev))
        self.scale.copy_(torch.as_tensor(scale, device=dev))
        for b in range(len(self.cfg.edges) + 1):
            zb = z[strata == b]
            if len(zb) < 2:  # nothing to compare with: this stratum stays unfitted (NaN scores)
                continue
            ms = min(self.cfg.max_samples, len(zb))
            forest = IsolationForest(n_estimators=self.cfg.n_trees, max_samples=ms,
                                     random_state=seed + b).fit(zb)
            feature, value = export_forest(forest, self.cfg)
            ids = np.where(feature < 0, self.leaf, feature)
            self.feature[b].copy_(torch.as_tensor(ids, device=dev).to(self.feature.dtype))
            self.value[b].copy_(torch.as_tensor(value, device=dev))
            self.c_norm[b] = float(_avg_path(ms))
            self.fitted[b] = True
        with torch.no_grad():
            zt = torch.as_tensor(z, device=dev)
            s = self.path_score(zt, torch.as_tensor(strata, device=dev)).cpu().numpy()
        qs = (np.arange(self.cfg.n_ref) + 0.5) / self.cfg.n_ref
        for b in range(len(self.cfg.edges) + 1):
            sb = s[strata == b]
            if len(sb) >= 2:
                self.ref[b] = torch.as_tensor(np.quantile(sb, qs), dtype=torch.float32, device=dev)
        return s
