"""Does the light curve sharpen the served host photo-z?  A product-of-experts experiment (issue 10, item 5).

Run::

    python scripts/joint_photoz.py --train /tmp/simrot --train /tmp/logo29 \\
        --test /tmp/sim11 --test /tmp/heldout71 --test /tmp/zoo73 [--epochs 12]

The CIGaRS idea: a supernova's apparent brightness, colour and time dilation carry its redshift,
so the host posterior could be multiplied by a light-curve likelihood::

    p(z | host, LC, alerted) ∝ p(z | host) S(z) · [p(z | LC) / π(z)]^alpha

``p(z | host) S(z)`` is what the stream serves (the distilled host network times the alert-selection
prior, :mod:`models.photoz_prior`); ``p(z | LC)`` is a small mixture-density network on the 291
summary features each alert is served with, trained on the ``--train`` archives' hosted alerts;
``π(z)`` its training redshift density (a Gaussian KDE, floored at e^-6 of its peak), divided out so
that the selection is not counted twice. Every archive is read through the serving path
(:func:`models.served.enrich_archive` with the shipped model), so the features and host tokens are
those alerts get. It prints, per ``--test`` archive and ``alpha`` in ``--alpha``, the q50 figures
(sigma_NMAD / outliers / bias) on alerts with a DC2-validation host, transients and AGN apart.
``alpha = 0`` is the served photo-z. Nothing here is served: it decides whether to build it.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from broker.settings import Settings
from models.metrics import photoz_stats
from models.photoz_prior import mixture_log_density
from models.predictor import load_default
from models.served import PassThrough, enrich_archive
from models.served_photoz import AGN_CODE, _dc2_validation_ids

#: Components of the light-curve mixture, and the redshift grid of the products.
COMPONENTS = 6
Z_GRID = (0.0025, 3.5, 1400)


class _Recorder(PassThrough):
    """A predictor that passes the shipped one's answers on and keeps what the photo-z needs."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obj", "summary", "host", "host_mask")}

    def predict(self, batch: Any, features: Any) -> Any:
        if features is None:
            from broker.features import featurize

            features = featurize(batch)
        self.parts["obj"].append(np.asarray(batch.table["diaObjectId"], np.int64))
        self.parts["summary"].append(np.asarray(features.summary, np.float32))
        self.parts["host"].append(np.asarray(features.host, np.float32))
        self.parts["host_mask"].append(np.asarray(features.host_mask, bool))
        return self.inner.predict(batch, features)


def collect(archive: Path, exclude: tuple[str, ...] = ()) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Served alerts of hosted objects whose host was matched: truth rows and feature/host arrays.

    Objects of a generator in ``exclude`` are left out (to keep a generator unseen by the network).
    """
    from consumers.app import make_predictor

    settings = Settings.load(model="default", host_catalog=str(archive / "hosts"), torch_threads=1)
    rec = _Recorder(make_predictor(settings))
    enrich_archive(archive / "alerts", settings, rec, 0)
    arr = {k: np.concatenate(v) for k, v in rec.parts.items()}
    truth = pl.read_parquet(archive / "truth.parquet").select("diaObjectId", "class_code", "redshift",
                                                              "host_galaxy_id", "split", "generator")  # fmt: skip
    df = pl.DataFrame({"diaObjectId": arr["obj"]}).join(truth, on="diaObjectId", how="left", maintain_order="left")
    ok = ((df["redshift"].fill_null(-1.0) > 0) & (df["host_galaxy_id"].fill_null(-1) >= 0)).to_numpy()
    ok &= arr["host_mask"].any(1)
    ok &= ~df["generator"].is_in(list(exclude)).fill_null(False).to_numpy()
    return df.filter(pl.Series(ok)), {k: v[ok] for k, v in arr.items()}


class LcRedshift(nn.Module):
    """Summary features (n, F) -> a Gaussian mixture over z: ``(log weights, means, sigmas)``, each (n, M)."""

    centre: Tensor
    scale: Tensor

    def __init__(self, centre: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        f = len(centre)
        self.net = nn.Sequential(nn.Linear(2 * f, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                                 nn.Linear(256, 3 * COMPONENTS))  # fmt: skip

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        seen = torch.isfinite(x)
        v = torch.where(seen, (x - self.centre) / self.scale, torch.zeros_like(x)).clamp(-10, 10)
        o = self.net(torch.cat([v, seen.float()], 1))
        lw, mu, s = o.split(COMPONENTS, 1)
        return torch.log_softmax(lw, 1), mu, nn.functional.softplus(s) + 0.01


def _nll(mix: tuple[Tensor, Tensor, Tensor], z: Tensor) -> Tensor:
    lw, mu, s = mix
    return -torch.logsumexp(lw - 0.5 * ((z[:, None] - mu) / s) ** 2 - torch.log(s), 1)


def train(x: np.ndarray, z: np.ndarray, split: np.ndarray, epochs: int, seed: int = 0) -> LcRedshift:
    """Fit on ``split == 'train'`` rows; keep the epoch with the lowest NLL on the others."""
    torch.manual_seed(seed)
    tr = split == "train"
    with np.errstate(all="ignore"):
        centre = np.nan_to_num(np.nanmedian(x[tr], 0))
        iqr = np.nanpercentile(x[tr], 75, 0) - np.nanpercentile(x[tr], 25, 0)
    net = LcRedshift(centre, np.where(np.isfinite(iqr) & (iqr > 0), iqr, 1.0))
    xt, zt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(z.astype(np.float32))
    idx, val = np.flatnonzero(tr), np.flatnonzero(~tr)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    best, state = float("inf"), net.state_dict()
    for ep in range(epochs):
        net.train()
        order = np.random.default_rng(seed + ep).permutation(idx)
        for s in range(0, len(order), 256):
            b = order[s : s + 256]
            loss = _nll(net(xt[b]), zt[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(_nll(net(xt[val]), zt[val]).mean()) if len(val) else -float(ep)
        if v < best:
            best, state = v, {k: t.clone() for k, t in net.state_dict().items()}
    net.load_state_dict(state)
    return net


def _log_density(mix: tuple[Tensor, Tensor, Tensor], z: Tensor) -> Tensor:
    return mixture_log_density(*mix, z)


def median_on_grid(logp: Tensor, z: Tensor) -> np.ndarray:
    """Median of each row's density ``exp(logp)`` (n, G) on the grid ``z`` (G,)."""
    c = torch.cumsum(torch.exp(logp - logp.amax(1, keepdim=True)), 1)
    k = torch.searchsorted(c / c[:, -1:], torch.full((len(c), 1), 0.5, dtype=c.dtype))[:, 0]
    return z[k.clamp(max=len(z) - 1)].numpy()


def main(argv: list[str] | None = None) -> int:
    """Print the table of the module docstring and a ``key=value`` line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--train", type=Path, action="append", required=True)
    p.add_argument("--test", type=Path, action="append", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--exclude-generator", default="", help="comma-separated generators left out of --train")
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)  # features never seen in training
    parts = [collect(t, tuple(g for g in a.exclude_generator.split(",") if g)) for t in a.train]
    x = np.concatenate([arr["summary"] for _, arr in parts])
    z = np.concatenate([df["redshift"].to_numpy() for df, _ in parts])
    split = np.concatenate([df["split"].to_numpy() for df, _ in parts])
    net = train(x, z, split, a.epochs)
    grid = torch.linspace(*Z_GRID, dtype=torch.float64)
    ztr = torch.from_numpy(z[split == "train"]).double()
    kde = torch.logsumexp(-0.5 * ((grid[:, None] - ztr[None]) / 0.05) ** 2, 1)
    log_pi = torch.maximum(kde, kde.max() - 6.0)  # the LC network's training prior, floored
    model, val_ids = load_default().model, list(_dc2_validation_ids())
    print(f"light-curve network: {int((split == 'train').sum())} training alerts, median z {np.median(z):.3f}")
    keys = []
    for arch in a.test:
        df, arr = collect(arch)
        keep = df["host_galaxy_id"].is_in(val_ids).to_numpy()
        df, arr = df.filter(pl.Series(keep)), {k: v[keep] for k, v in arr.items()}
        with torch.no_grad():
            assert model.photoz_student is not None, "the shipped model serves a distilled host photo-z"
            host = _log_density(model.photoz_student(torch.from_numpy(arr["host"]), torch.from_numpy(arr["host_mask"])),
                                grid) + model.photoz_prior.log_s(grid)  # fmt: skip
            lc = _log_density(net(torch.from_numpy(arr["summary"])), grid) - log_pi
        zt, agn = df["redshift"].to_numpy(), (df["class_code"] == AGN_CODE).to_numpy()
        print(f"{arch.name}: {len(zt)} alerts with a DC2-validation host ({int(agn.sum())} AGN)")
        for alpha in a.alpha:
            q50 = median_on_grid(host + alpha * lc, grid)
            cells = []
            for name, m in (("transients", ~agn), ("AGN", agn)):
                if m.any():
                    s = photoz_stats(q50[m], zt[m])
                    cells.append(f"{name} {s['sigma_nmad']:.4f} / {s['outliers']:.3f} / {s['bias']:+.4f}")
                    if name == "transients":
                        keys.append(f"{arch.name}_a{alpha:g}_nmad={s['sigma_nmad']:.4f} "
                                    f"{arch.name}_a{alpha:g}_outliers={s['outliers']:.4f}")  # fmt: skip
            print(f"  alpha {alpha:g}: " + " | ".join(cells))
    print(" ".join(keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
