"""Metrics and plots for ``alertbroker eval`` (numpy / scikit-learn / matplotlib)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (equal-width bins)."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    err = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            err += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(err)


#: Top-class probability from which a served answer counts as confident (issue 10's "p >= 0.9" goal).
SURE = 0.9


def confident(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Share of rows whose top probability is at least :data:`SURE`, and the accuracy among them
    (NaN when there are none)."""
    sure = probs.max(1) >= SURE
    right = float(np.mean(probs.argmax(1)[sure] == labels[sure])) if sure.any() else float("nan")
    return float(sure.mean()), right


def photoz_stats(zp: np.ndarray, zt: np.ndarray) -> dict[str, float]:
    """``sigma_nmad``, ``outliers`` (|dz|/(1+z) > 0.15) and median ``bias`` of dz/(1+z)."""
    dz = (zp - zt) / (1 + zt)
    med = float(np.median(dz))
    return {"sigma_nmad": float(1.4826 * np.median(np.abs(dz - med))),
            "outliers": float(np.mean(np.abs(dz) > 0.15)), "bias": med}


def print_table(rows: list[tuple], header: tuple[str, ...]) -> None:
    """Print ``rows`` right-aligned under ``header`` (floats with 4 decimals)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    width = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in (list(header), *cells):
        print("  ".join(f"{v:>{w}}" for v, w in zip(line, width, strict=True)))


def recall_at(score: np.ndarray, positive: np.ndarray, frac: float) -> float:
    """Fraction of positives among the top ``frac`` highest scores."""
    k = max(int(round(frac * len(score))), 1)
    top = np.argsort(-score, kind="stable")[:k]
    return float(positive[top].sum() / max(positive.sum(), 1))


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix."""
    plt = _plt()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(series: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, xlabel: str,
                ylabel: str, title: str, diagonal: bool = False) -> None:
    """Line plot of named (x, y) series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, label=name)
    if diagonal:
        ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_photoz(points: dict[str, np.ndarray], zt: np.ndarray, path: Path) -> None:
    """z_phot vs z_true panels, one per estimator."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4.2), squeeze=False)
    for ax, (name, zp) in zip(axes[0], points.items(), strict=True):
        s = photoz_stats(zp, zt)
        ax.scatter(zt, zp, s=1, alpha=0.3)
        ax.plot([0, 3.1], [0, 3.1], "k:", lw=1)
        ax.set_xlim(0, 3.1)
        ax.set_ylim(0, 3.1)
        ax.set_xlabel("z_true")
        ax.set_ylabel("z_phot")
        ax.set_title(f"{name}: NMAD {s['sigma_nmad']:.4f}, out {100 * s['outliers']:.1f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def labelled_paths(items: list[str]) -> dict[str, str]:
    """``LABEL=PATH`` command-line items (``--checkpoint``) as a dict, in order.

    Raises
    ------
    ValueError
        An item without ``=`` or with a label other than letters, digits and ``_`` (labels name
        the ``key=value`` figures, so they must stay one word).
    """
    out: dict[str, str] = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not re.fullmatch(r"\w+", label):
            raise ValueError(f"--checkpoint {item!r}: expected LABEL=PATH")
        out[label] = path
    return out
