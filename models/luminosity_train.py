"""``alertbroker train-luminosity``: fit the luminosity prior (:mod:`models.luminosity`) on served alerts.

Run (the shipped model's, on the validation and test objects of the survey its classifier trained on)::

    alertbroker train-luminosity --init models/weights/default.pt --archive /tmp/simrot \\
        --out models/weights/default.pt

Every alert of each ``--archive`` (a simulator output: ``alerts/``, ``hosts/``, ``truth.parquet``)
is enriched as ``alertbroker run`` serves it (:func:`models.served.enrich_archive`), with the prior
switched off; for each alert the gate classified, the classifier's probabilities and the prior's
inputs (peak absolute magnitude and ``log10`` of the served photo-z median, computed from the same
tokens by the model's :meth:`~models.physics.PhysicsDensity.inputs`) are kept with the true class.
The prior is fitted on the objects of ``--split`` (default: those the classifier did not train on),
optionally without some generators' (``--exclude-generator``, comma-separated and checked against
the archive as ``train``'s: the leave-one-generator-out grid, or a model trained without them), and
a copy of ``--init`` whose only change is the ``luminosity.`` buffers (checked) is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from broker.batch import AlertBatch
from broker.predict import Predictions
from broker.settings import Settings
from models.checkpoint import load_checkpoint, report_part, save_part
from models.generator_split import GeneratorFilter, filter_generators
from models.heads import PHOTOZ_COLUMNS
from models.luminosity import fit_prior
from models.model import MultimodalModel
from models.predictor import MultimodalPredictor
from models.served import enrich_archive, join_truth

_PREFIX = "luminosity."
_Q50 = PHOTOZ_COLUMNS.index("q50")


class InputsRecorder(MultimodalPredictor):
    """The served predictor, keeping each scored alert's probabilities and prior inputs by ``diaSourceId``."""

    def __init__(self, model: MultimodalModel, meta: dict[str, Any]) -> None:
        super().__init__(model, meta)
        self.rows: list[pl.DataFrame] = []
        self._ids = np.zeros(0, np.int64)

    def predict(self, batch: AlertBatch, features: Any | None) -> Predictions:
        """Served predictions (:meth:`predict_tokens` records them under the batch's ``diaSourceId``)."""
        self._ids = np.asarray(batch.table["diaSourceId"], np.int64)
        return super().predict(batch, features)

    def predict_tokens(self, tokens: dict[str, np.ndarray], log10_flux_scale: np.ndarray | None = None
                       ) -> Predictions:
        """Served predictions; also records ``probs`` and (abs_mag, log_z) per alert."""
        preds = super().predict_tokens(tokens, log10_flux_scale)
        tok = {k: torch.from_numpy(np.ascontiguousarray(tokens[k])) for k in ("lc", "lc_mask", "feat", "feat_mask")}
        n = len(tokens["lc"])
        q50 = preds.photoz[:, _Q50] if preds.photoz is not None else np.full(n, np.nan, np.float32)
        z = torch.from_numpy(np.ascontiguousarray(q50))
        with torch.no_grad():
            x, _ = self.model.physics.inputs_fp32(tok["lc"], tok["lc_mask"], tok["feat"], tok["feat_mask"], z)
        self.rows.append(pl.DataFrame({"diaSourceId": self._ids, "probs": preds.probs, "abs_mag": x[:, 0].numpy(),
                                       "log_z": x[:, 1].numpy()}))
        return preds


def served_inputs(model: MultimodalModel, meta: dict[str, Any], archive: Path) -> pl.DataFrame:
    """Classified alerts of ``archive`` with ``probs`` (K,), ``abs_mag``, ``log_z`` and the truth columns."""
    rec = InputsRecorder(model, meta)
    settings = Settings.load(host_catalog=str(archive / "hosts") if (archive / "hosts").is_dir() else None)
    run = enrich_archive(archive / "alerts", settings, rec)
    rows = pl.concat(rec.rows).unique("diaSourceId", keep="last")
    served = run.alerts.select("diaSourceId", "diaObjectId", "classification_state")
    df = join_truth(served.join(rows, on="diaSourceId"), pl.read_parquet(archive / "truth.parquet"))
    return df.filter(pl.col("classification_state") == "classified")


def build_parser() -> argparse.ArgumentParser:
    """Options of ``alertbroker train-luminosity``."""
    p = argparse.ArgumentParser(prog="alertbroker train-luminosity", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--init", type=Path, required=True, help="checkpoint whose classifier gets the prior")
    p.add_argument("--archive", type=Path, action="append", required=True,
                   help="simulator output (alerts/, hosts/, truth.parquet); repeat to pool several")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--split", default="validation,test", help="truth splits fitted on (comma-separated; 'all')")
    p.add_argument("--exclude-generator", default="",
                   help="comma-separated generators whose objects are left out of the fit (as train's)")
    p.add_argument("--l2", type=float, default=1e-3, help="ridge penalty on the prior's weights")
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train-luminosity``; exit status 1 if any other weight moved."""
    a = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    model, meta = load_checkpoint(a.init, any_features=True)  # served through the predictor: its own features
    model.luminosity.fitted.fill_(False)  # fit on the classifier's own probabilities
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(_PREFIX)}
    df = pl.concat([served_inputs(model, meta, Path(x)) for x in a.archive], how="vertical_relaxed")
    ids = [int(c) for c in meta["taxonomy"]["class_ids"]]
    keep = pl.col("class_code").is_in(ids)
    if a.split != "all":
        keep &= pl.col("split").is_in(a.split.split(","))
    df = filter_generators(df.filter(keep), GeneratorFilter.parse(a.exclude_generator, None))
    probs = np.stack(df["probs"].to_list()).astype(np.float64)
    x = df.select("abs_mag", "log_z").to_numpy().astype(np.float64)
    y = np.array([ids.index(int(c)) for c in df["class_code"]])
    weight, scale, info = fit_prior(probs, x, y, a.l2)
    model.luminosity.set(weight, scale)
    print(f"{df.height} classified alerts of {a.split} objects; {int(info['rows'])} with a photo-z and a peak: "
          f"NLL {info['nll_before']:.4f} -> {info['nll_after']:.4f}, accuracy {info['acc_before']:.4f} -> "
          f"{info['acc_after']:.4f}; scale {scale:.3f}")
    info |= {"scale": scale, "alerts": float(df.height)}
    fit = {"init": str(a.init), "archives": [str(x) for x in a.archive], "split": a.split,
           "exclude_generator": a.exclude_generator, "l2": a.l2, **info}
    train_meta = {**meta.get("train", {}), "luminosity": fit}
    return report_part(a.out, info, save_part(a.out, model, meta, train_meta, before, _PREFIX), t0)


if __name__ == "__main__":
    raise SystemExit(cli_main())
