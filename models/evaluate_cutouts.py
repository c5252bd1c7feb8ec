"""``alertbroker eval cutouts``: what the image modality buys, measured with and without it.

Scores each ``--checkpoint LABEL=PATH`` (typically one model trained with ``--images`` and one
without, on the same tables and seed) on the test split of a training-table directory, with the
simulator's artefacts mixed in (``--bogus-fraction`` per real object, :mod:`models.cutout_data`),
at the first 1, 3, 5 and 10 detections and on the full light curve:

* class: macro-F1 and accuracy over real objects of the model's taxonomy;
* real/bogus: AUROC of P(real) over real objects (every class, held-out ones included) against
  artefacts, and the share of artefacts rejected / real objects kept at P(real) = 0.5 (for a
  model with a real/bogus head);
* photo-z on DC2 validation galaxies: the served host-magnitude path, and for an image model the
  same galaxies seen with their template stamp (sigma_NMAD, outliers, bias of the PDF mode);
* real Rubin alerts (``--real``): P(real) against the pipeline's own ``isDipole`` flag, the only
  artefact label real alerts carry;
* cost: model microseconds per alert (batch 500, one thread) with the stamps and, with
  ``--archive`` (simulated alerts written with ``--cutouts``), the decoder's cost of reading them
  and ``enrich()``'s cost per alert with each checkpoint, built as ``alertbroker run`` builds it.

Every image model sees the same rendered stamps (fixed seed). The run ends with one ``key=value``
line, ``<label>_<figure>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from models.checkpoint import load_checkpoint
from models.cutout_data import bogus_table, photometry_scenes
from models.data import TokenData, dc2_path, photometry_tokens, read_photometry, table_tokens
from models.heads import mixture_summary
from models.metrics import labelled_paths, photoz_stats, print_table
from models.model import MultimodalModel
from models.train import batch_tensors, run_model
from models.train_data import split_table

#: Detection cuts scored (None = the full light curve).
CUTS: tuple[int | None, ...] = (1, 3, 5, 10, None)


def test_views(data_dir: Path, class_ids: tuple[int, ...], bogus_fraction: float, max_objects: int,
               seed: int) -> dict[str, TokenData]:
    """Test-split tokens with artefacts, one :class:`TokenData` per detection cut."""
    df = split_table(data_dir, "test", max_objects)
    rng = np.random.default_rng(seed)
    df = pl.concat([df.with_columns(pl.lit(0).alias("bogus_kind")),
                    bogus_table(df, int(round(bogus_fraction * df.height)), rng)], how="vertical_relaxed")
    return {("full" if k is None else f"k{k}"): table_tokens(df, class_ids, k, scenes=np.random.default_rng(seed + 1))
            for k in CUTS}


def _scores(model: MultimodalModel, view: TokenData) -> dict[str, float]:
    from sklearn.metrics import f1_score, roc_auc_score

    keep = view.n_det > 0
    td = view.take(np.flatnonzero(keep))
    out = run_model(model, td, torch.device("cpu"))
    known = td.label >= 0
    pred = out["logits"].argmax(1)
    res = {"macro_f1": float(f1_score(td.label[known], pred[known], average="macro")),
           "accuracy": float((pred[known] == td.label[known]).mean())}
    if "rb_logit" in out and td.real is not None and 0 < td.real.mean() < 1:
        assert model.real_bogus is not None
        p = model.real_bogus.probability(torch.as_tensor(out["rb_logit"])).numpy()
        real = td.real > 0.5
        res.update(rb_auroc=float(roc_auc_score(real, p)), bogus_rejected=float((p[~real] < 0.5).mean()),
                   real_kept=float((p[real] >= 0.5).mean()))
    return res


@torch.no_grad()
def _photoz(model: MultimodalModel, td: TokenData, images: bool) -> np.ndarray:
    """Photo-z summaries (n, 8): host magnitudes only, or with the rendered template stamps."""
    out = []
    rng = np.random.default_rng(12345)
    for s in range(0, len(td), 4096):
        idx = np.arange(s, min(s + 4096, len(td)))
        if not images:
            out.append(model.photoz_from_host(torch.from_numpy(td.tokens["host"][idx]),
                                              torch.from_numpy(td.tokens["host_mask"][idx]),
                                              selection=False).float().numpy())
            continue
        o = model(**batch_tensors(td, idx, torch.device("cpu"), True, rng))
        out.append(mixture_summary(o["logw"], o["mu"], o["sigma"] * model.z_sigma_scale).float().numpy())
    return np.concatenate(out)


def _cost(model: MultimodalModel, td: TokenData, reps: int = 3) -> float:
    """Model microseconds per alert, batches of 500 (stamps rendered beforehand, not timed)."""
    idx = np.arange(min(500, len(td)))
    tok = batch_tensors(td, idx, torch.device("cpu"), model.cfg.encoder.images, np.random.default_rng(0))
    best = np.inf
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            model.infer(None, True, **tok)
            best = min(best, time.perf_counter() - t0)
    return float(best / len(idx) * 1e6)


def archive_messages(archive: Path, max_alerts: int = 2000) -> list[bytes | None]:
    """The first ``max_alerts`` readable messages of an archive."""
    from broker.decode import BatchDecoder
    from broker.schemas import SchemaStore
    from consumers.archive import iter_archive

    msgs: list[bytes | None] = []
    for m in iter_archive(archive, BatchDecoder(SchemaStore())):
        if m.error is None:
            msgs.append(m.value)
        if len(msgs) >= max_alerts:
            break
    return msgs


def enrich_cost(msgs: list[bytes | None], checkpoint: str, threads: int, batch: int = 500) -> float:
    """``enrich()`` microseconds per alert with ``checkpoint`` as ``alertbroker run`` builds it
    (stamps read only for an image model; no host catalog), best of two passes after a warm-up."""
    from broker.settings import Settings
    from consumers.app import make_enricher

    enr = make_enricher(Settings.load(model=checkpoint, torch_threads=threads), scores=False)
    enr.enrich(msgs[:batch])
    best = np.inf
    for _ in range(2):
        t0 = time.perf_counter()
        for s in range(0, len(msgs), batch):
            enr.enrich(msgs[s : s + batch])
        best = min(best, time.perf_counter() - t0)
    return float(best / max(len(msgs), 1) * 1e6)


def decode_cost(msgs: list[bytes | None]) -> tuple[float, float, float]:
    """Decoder microseconds per alert without and with the stamps, and the share of alerts with stamps."""
    from broker.decode import BatchDecoder
    from broker.schemas import SchemaStore

    store = SchemaStore()
    times = []
    frac = 0.0
    for cut in (False, True):
        dec = BatchDecoder(store, cutouts=cut)
        dec.decode(msgs[:10])
        t0 = time.perf_counter()
        res = dec.decode(msgs)
        times.append((time.perf_counter() - t0) / max(len(msgs), 1) * 1e6)
        if res.batch.images is not None:
            frac = float(res.batch.images.mask.mean()) if len(res.batch) else 0.0
    return times[0], times[1], frac


def real_alert_check(msgs: list[bytes], checkpoint: str) -> dict[str, float]:
    """P(real) of real Rubin alerts against the pipeline's own ``diaSource.isDipole`` (schema >= 8).

    The only labels real alerts carry about artefacts are the pipeline's flags: this scores the
    image model's P(real) on the alerts that have the flag (dipoles as bogus), and counts the
    rejections (P(real) < 0.5) among the alerts without it.
    """
    from sklearn.metrics import roc_auc_score

    from broker.decode import BatchDecoder
    from broker.decode_ref import read_message
    from broker.flatten import flatten
    from broker.schemas import SchemaStore
    from broker.settings import Settings
    from consumers.app import make_enricher

    store = SchemaStore()
    dipole = {}
    for m in msgs:
        rec = read_message(m, store)[1]
        dipole[rec["diaSource"]["diaSourceId"]] = rec["diaSource"].get("isDipole")
    enr = make_enricher(Settings.load(model=checkpoint, torch_threads=1), scores=False)
    res = enr.enrich(list(msgs))
    vals = [o.value for o in res.outputs]
    df = flatten(BatchDecoder(store).decode(vals), vals).filter(~pl.col("solar_system"))
    p = df["real_bogus"].fill_null(np.nan).to_numpy()
    flag = np.array([dipole.get(s) for s in df["diaSourceId"].to_list()], dtype=object)
    has = np.array([f is not None for f in flag]) & np.isfinite(p)
    dip = np.array([f is True for f in flag])
    out = {"real_n": float(len(df)), "real_rejected": float(np.nanmean(p < 0.5)) if np.isfinite(p).any() else np.nan,
           "real_flagged_n": float(has.sum()), "real_dipoles": float((dip & has).sum()),
           "real_dipoles_rejected": float((p[dip & has] < 0.5).mean()) if (dip & has).any() else np.nan,
           "real_others_rejected": float((p[has & ~dip] < 0.5).mean()) if (has & ~dip).any() else np.nan}
    two = (dip & has).any() and (has & ~dip).any()  # an AUROC needs both kinds
    out["real_dipole_auroc"] = float(roc_auc_score(~dip[has], p[has])) if two else np.nan
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker eval cutouts``; returns an exit code."""
    p = argparse.ArgumentParser(prog="alertbroker eval cutouts", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="training-table directory (its test split is scored)")
    p.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH",
                   help="a checkpoint to score (repeat); LABEL is letters, digits and '_'")
    p.add_argument("--bogus-fraction", type=float, default=0.25, help="artefacts per real test object")
    p.add_argument("--max-objects", type=int, default=0, help="cap on real test objects (0 = all)")
    p.add_argument("--archive", help="simulated alerts written with --cutouts: time the decoder on them")
    p.add_argument("--real", help="real Rubin alerts (a folder of wire-format .bin messages): P(real) against "
                                  "the pipeline's isDipole flag, for models with a real/bogus head")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    try:
        cks = labelled_paths(a.checkpoint)
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(a.threads)
    res: dict[str, float] = {}
    rows, zrows = [], []
    dc2 = read_photometry(dc2_path("test_dc2_validation_9816"))
    ztd = photometry_tokens(dc2, 0)
    ztd.scene = photometry_scenes(dc2, np.random.default_rng(a.seed + 2))
    views: dict[str, TokenData] = {}
    for label, path in cks.items():
        model, meta = load_checkpoint(path)
        views = views or test_views(Path(a.data), tuple(meta["taxonomy"]["class_ids"]), a.bogus_fraction,
                                    a.max_objects, a.seed)
        for name, view in views.items():
            s = _scores(model, view)
            rows.append((label, name, int((view.n_det > 0).sum()), s["macro_f1"], s["accuracy"],
                         s.get("rb_auroc", np.nan), s.get("bogus_rejected", np.nan), s.get("real_kept", np.nan)))
            res.update({f"{label}_{name}_{k}": v for k, v in s.items()})
        for images in (False, True) if model.cfg.encoder.images else (False,):
            st = photoz_stats(_photoz(model, ztd, images)[:, 2], ztd.z)
            tag = "host+template" if images else "host"
            zrows.append((label, tag, len(ztd), st["sigma_nmad"], st["outliers"], st["bias"]))
            key = tag.replace("+", "_")
            res.update({f"{label}_photoz_{key}_{k}": st[k] for k in ("sigma_nmad", "outliers", "bias")})
        res[f"{label}_model_us_per_alert"] = _cost(model, views["k3"])
    print_table(rows, ("checkpoint", "view", "n", "macro-F1", "accuracy", "RB AUROC", "bogus rejected", "real kept"))
    print_table(zrows, ("checkpoint", "photo-z inputs", "n", "sigma_NMAD", "outliers", "bias"))
    if a.archive:
        msgs = archive_messages(Path(a.archive))
        plain, with_stamps, frac = decode_cost(msgs)
        res.update(decode_us_per_alert=plain, decode_with_stamps_us_per_alert=with_stamps, stamps_read=frac)
        print(f"decode: {plain:.0f} us/alert, with stamps {with_stamps:.0f} us/alert ({frac:.0%} of alerts had stamps)")
        for label, path in cks.items():
            res[f"{label}_enrich_us_per_alert"] = enrich_cost(msgs, path, a.threads)
            print(f"{label}: enrich() {res[f'{label}_enrich_us_per_alert']:.0f} us/alert on {len(msgs)} archive alerts")
    if a.real:
        real_msgs = [f.read_bytes() for f in sorted(Path(a.real).glob("*.bin"))]
        for label, path in cks.items():
            chk = real_alert_check(real_msgs, path)
            res.update({f"{label}_{k}": v for k, v in chk.items()})
            print(f"{label} on {int(chk['real_n'])} real Rubin alerts (not solar-system): P(real) < 0.5 for "
                  f"{chk['real_rejected']:.0%}; pipeline dipoles {int(chk['real_dipoles'])} of "
                  f"{int(chk['real_flagged_n'])} flagged: {chk['real_dipoles_rejected']:.0%} rejected, others "
                  f"{chk['real_others_rejected']:.0%}; AUROC against the flag {chk['real_dipole_auroc']:.3f}")
    for label in cks:
        print(f"{label}: model {res[f'{label}_model_us_per_alert']:.0f} us/alert (batch 500, {a.threads} thread)")
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
