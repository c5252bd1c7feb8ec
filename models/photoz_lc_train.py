"""``alertbroker train-photoz-lc``: train the light curve's redshift likelihood of the served photo-z.

Run (four simulated nights, the generator kept unseen for the held-out check left out)::

    alertbroker train-photoz-lc --init models/weights/default.pt --archive /tmp/simall7 \\
        --archive /tmp/simpz91 --archive /tmp/simpz93 --archive /tmp/simpz95 \\
        --exclude-generator mosfit --classes "SN Ia" --out OUT.pt

Every archive is enriched through the serving path (:func:`models.served.enrich_archive` with the
``--init`` model and the archive's own host catalog), so the networks learn from the feature tokens
alerts are served with. It keeps the alerts of hosted objects of the ``--classes`` whose host was
matched (truth ``redshift > 0``, ``host_galaxy_id >= 0``), fits each member of
:class:`~models.photoz_lc.LcRedshift` on the truth split ``train`` with each alert weighted by
``1 / pi(z)`` (``pi``: the training redshift histogram in bins of 0.05, weights clipped at
``--max-weight`` times their median; why: see :mod:`models.photoz_lc`), keeps each member's epoch
with the lowest weighted loss on the other splits, marks the classes it serves, and writes a copy of
``--init`` whose only new weights are ``photoz_lc.`` (checked). The served figures: ``alertbroker
eval served --checkpoint OUT``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from broker.settings import Settings
from models.checkpoint import report_part, save_part, start_part, with_new_part
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.metrics import photoz_stats
from models.photoz_lc import LcRedshift, nll
from models.served import PassThrough, enrich_archive

_PREFIX = "photoz_lc."
_Q50 = PHOTOZ_COLUMNS.index("q50")


class TokenRecorder(PassThrough):
    """A predictor that passes ``inner``'s answers on and keeps the feature tokens of host-matched alerts."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.parts: dict[str, list[np.ndarray]] = {"obj": [], "value": [], "mask": []}

    def predict(self, batch: Any, features: Any) -> Any:
        """``inner.predict``, keeping ``diaObjectId`` and the feature tokens of alerts with a host."""
        keep = np.asarray(features.host_mask).any(1)
        self.parts["obj"].append(np.asarray(batch.table["diaObjectId"], np.int64)[keep])
        self.parts["value"].append(np.asarray(features.feat, np.float32)[keep, :, 1])
        self.parts["mask"].append(np.asarray(features.feat_mask, bool)[keep])
        return self.inner.predict(batch, features)


def served_rows(archive: Path, init: Path, exclude: tuple[str, ...], classes: tuple[str, ...]
                ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:  # fmt: skip
    """Truth rows (``redshift``, ``split``) and feature values / masks (n, F) of an archive's hosted alerts
    of true class in ``classes`` whose generator is not in ``exclude``."""
    from models.predictor import load_predictor

    settings = Settings.load(model=str(init), host_catalog=str(archive / "hosts"), torch_threads=1)
    rec = TokenRecorder(load_predictor(init, threads=1))
    enrich_archive(archive / "alerts", settings, rec)
    obj = np.concatenate(rec.parts["obj"])
    truth = pl.read_parquet(archive / "truth.parquet").select("diaObjectId", "redshift", "host_galaxy_id", "split",
                                                              "generator", "class_name")  # fmt: skip
    df = pl.DataFrame({"diaObjectId": obj}).join(truth, on="diaObjectId", how="left", maintain_order="left")
    ok = ((df["redshift"].fill_null(-1.0) > 0) & (df["host_galaxy_id"].fill_null(-1) >= 0)).to_numpy()
    ok &= ~df["generator"].is_in(list(exclude)).fill_null(False).to_numpy()
    ok &= df["class_name"].is_in(list(classes)).fill_null(False).to_numpy()
    keep = pl.Series(ok)
    return df.filter(keep), np.concatenate(rec.parts["value"])[ok], np.concatenate(rec.parts["mask"])[ok]


def as_tokens(value: torch.Tensor) -> torch.Tensor:
    """Feature tokens (n, F, 2) from the recorded values (n, F): the networks read only the values."""
    return torch.stack([torch.zeros_like(value), value], -1)


def flat_weights(z: np.ndarray, train: np.ndarray, max_weight: float, width: float = 0.05) -> np.ndarray:
    """Weights ``1 / pi(z)`` (mean 1), ``pi`` the histogram of ``z[train]``, clipped at ``max_weight`` x median."""
    edges = np.arange(0.0, float(z.max()) + 2 * width, width)
    dens, _ = np.histogram(z[train], bins=edges, density=True)
    pi = np.maximum(dens[np.clip(np.digitize(z, edges) - 1, 0, len(dens) - 1)], 1e-6)
    w = 1.0 / pi
    w = np.minimum(w / np.median(w), max_weight)
    return w / w.mean()


def fit(lc: LcRedshift, value: torch.Tensor, mask: torch.Tensor, z: torch.Tensor, w: torch.Tensor,
        train: np.ndarray, epochs: int, seed: int, lr: float = 1e-3) -> list[list[float]]:  # fmt: skip
    """Fit each member of ``lc`` on the ``train`` rows by weighted likelihood, from its own seed, keeping
    the epoch best on the other rows (one network overfits the training objects within a few epochs).

    Returns each member's held-out weighted loss per epoch.
    """
    tr, va = np.flatnonzero(train), np.flatnonzero(~train)
    with torch.no_grad():
        v = torch.where(mask[tr], value[tr], torch.nan)
        q25, q50, q75 = (torch.nanquantile(v, q, 0) for q in (0.25, 0.5, 0.75))
        lc.set_scaling(torch.nan_to_num(q50), q75 - q25)
        x = lc.inputs(as_tokens(value), mask)
    hists = []
    for k, net in enumerate(lc.nets):
        torch.manual_seed(seed + 1000 * k)
        for layer in net.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
        opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
        best, state, hist = float("inf"), {n: t.clone() for n, t in net.state_dict().items()}, []
        for ep in range(epochs):
            net.train()
            order = np.random.default_rng(seed + 1000 * k + ep).permutation(tr)
            for s in range(0, len(order), 256):
                b = order[s : s + 256]
                loss = (nll(lc.member(k, x[b]), z[b]) * w[b]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                held = float((nll(lc.member(k, x[va]), z[va]) * w[va]).mean()) if len(va) else -float(ep)
            hist.append(held)
            if held < best:
                best, state = held, {n: t.clone() for n, t in net.state_dict().items()}
        net.load_state_dict(state)
        hists.append(hist)
    lc.eval()
    return hists


def generator_systematic(value: torch.Tensor, mask: torch.Tensor, z: np.ndarray, train: np.ndarray, gen: np.ndarray,
                         a: argparse.Namespace) -> tuple[float, dict[str, float]]:  # fmt: skip
    """The rms over generators of the median ``dz / (1 + z)`` a network trained without that generator
    reads on its alerts, and each generator's median (leave-one-generator-out, ``a``'s settings)."""
    bias: dict[str, float] = {}
    for g in sorted(set(gen.tolist())):
        held, rest = gen == g, gen != g
        if held.sum() < 100 or not rest.any():
            continue
        lc = LcRedshift(value.shape[1], a.hidden, a.members)
        w = flat_weights(z[rest], train[rest], a.max_weight)
        fit(lc, value[rest], mask[rest], torch.from_numpy(z[rest]).float(), torch.from_numpy(w).float(), train[rest],
            a.epochs, a.seed)  # fmt: skip
        with torch.no_grad():
            q50 = mixture_summary(*lc(as_tokens(value[held]), mask[held]))
        bias[g] = float(np.median((q50.numpy()[:, _Q50] - z[held]) / (1 + z[held])))
    return (float(np.sqrt(np.mean(np.square(list(bias.values()))))) if len(bias) > 1 else 0.0), bias


def build_parser() -> argparse.ArgumentParser:
    """Options of ``alertbroker train-photoz-lc``."""
    p = argparse.ArgumentParser(prog="alertbroker train-photoz-lc", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--init", type=Path, required=True, help="checkpoint that serves the archives and gets the network")
    p.add_argument("--archive", type=Path, action="append", required=True, help="simulated survey; repeat to pool")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--exclude-generator", default="", help="comma-separated generators left out")
    p.add_argument("--classes", default="SN Ia", help="comma-separated classes (of --init's taxonomy) it is trained "
                   "on and serves: the alerts whose top class is one of them")
    p.add_argument("--hidden", type=int, default=64, help="width of each network's two hidden layers")
    p.add_argument("--members", type=int, default=4, help="networks averaged, each from its own seed")
    p.add_argument("--epochs", type=int, default=6, help="epochs per network (the best on held-out rows is kept)")
    p.add_argument("--max-weight", type=float, default=3.0, help="clip of 1/pi(z) weights, in medians")
    p.add_argument("--systematic", default="auto", help="dz/(1+z) added in quadrature to the served widths; "
                   "'auto': the rms of each training generator's median when held out (one more fit per generator)")
    p.add_argument("--join", action="store_true", help="also serve it in the alert's photoz where the top class is "
                   "one of --classes, weighted by their probability (the class-marginal posterior; default: only in "
                   "photozIfClass, beside the host's photoz; `alertbroker graft --join` sets it later)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train-photoz-lc``."""
    a = build_parser().parse_args(argv)
    model, meta, before, t0 = start_part(a.init, _PREFIX, a.threads, a.seed)
    exclude = tuple(g for g in a.exclude_generator.split(",") if g)
    classes = tuple(c.strip() for c in a.classes.split(",") if c.strip())
    names = list(meta["taxonomy"]["class_names"])
    if not classes or any(c not in names for c in classes):
        raise SystemExit(f"--classes {a.classes!r}: each must be a class of the model ({', '.join(names)})")
    rows = [served_rows(arch, a.init, exclude, classes) for arch in a.archive]
    df = pl.concat([r[0] for r in rows])
    value = torch.from_numpy(np.concatenate([r[1] for r in rows]))
    mask = torch.from_numpy(np.concatenate([r[2] for r in rows]))
    z = df["redshift"].to_numpy().astype(np.float64)
    train = (df["split"] == "train").to_numpy()
    w = flat_weights(z, train, a.max_weight)
    cfg = replace(model.cfg, photoz_lc=a.hidden, photoz_lc_members=a.members, photoz_lc_join=a.join)
    new = with_new_part(model, cfg, _PREFIX)
    assert new.photoz_lc is not None
    new.photoz_lc.applies.copy_(torch.tensor([n in classes for n in names]))
    hist = fit(new.photoz_lc, value, mask, torch.from_numpy(z).float(), torch.from_numpy(w).float(), train,
               a.epochs, a.seed)  # fmt: skip
    with torch.no_grad():
        feat = as_tokens(value[~train])
        q50 = mixture_summary(*new.photoz_lc(feat, mask[~train])).numpy()[:, _Q50]
    st = photoz_stats(q50.astype(np.float64), z[~train])
    gen = df["generator"].fill_null("").to_numpy().astype(str)
    sys_z, per_gen = (generator_systematic(value, mask, z, train, gen, a) if a.systematic == "auto"
                      else (float(a.systematic), {}))  # fmt: skip
    new.photoz_lc.sigma_sys.fill_(sys_z)
    print("held-out generators, median dz/(1+z): " + (" ".join(f"{g} {b:+.4f}" for g, b in per_gen.items()) or "-")
          + f"; systematic {sys_z:.4f}")  # fmt: skip
    print(f"{int(train.sum())} training alerts, {int((~train).sum())} held out; held-out loss per epoch: "
          + " | ".join(" ".join(f"{h:.3f}" for h in m) for m in hist))  # fmt: skip
    print(f"light curve alone (flat prior), held-out q50: sigma_nmad={st['sigma_nmad']:.4f} "
          f"outliers={st['outliers']:.4f} bias={st['bias']:+.4f}")
    info = {"train_alerts": float(train.sum()), "heldout_alerts": float((~train).sum()), "sigma_sys": sys_z,
            "best_loss": float(np.mean([min(m) for m in hist])), **{f"lc_{k}": v for k, v in st.items()}}  # fmt: skip
    fitted = {"init": str(a.init), "archives": [str(x) for x in a.archive], "exclude_generator": list(exclude),
              "classes": list(classes), "hidden": a.hidden, "members": a.members, "epochs": a.epochs,
              "max_weight": a.max_weight, "join": a.join, "seed": a.seed, "generator_bias": per_gen,
              **info}  # fmt: skip
    train_meta = {**meta.get("train", {}), "photoz_lc": fitted}
    return report_part(a.out, info, save_part(a.out, new, meta, train_meta, before, _PREFIX), t0)


if __name__ == "__main__":
    raise SystemExit(cli_main())
