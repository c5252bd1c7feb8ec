"""The options of ``alertbroker train`` and the run they describe (the training itself: :mod:`models.train`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models.train as train_module
from models.anomaly import ForestConfig
from models.augment import Augment
from models.checkpoint import save_checkpoint
from models.data import data_hash, photometry_tokens
from models.encoder import EncoderConfig
from models.generator_split import GeneratorFilter
from models.model import ModelConfig
from models.neighbours import SCORES, NeighbourConfig
from models.photoz_broad import BROAD_TEST, photometry_columns
from models.train import TrainConfig, train
from models.train_data import load_class_tables

#: State a photo-z-only ``--init`` checkpoint never trained: its class head, feature
#: standardisation and calibration/anomaly buffers (refitted or learned by the new run).
PHOTOZ_ONLY_DROP: tuple[str, ...] = ("cls_head.", "encoder.embed.feat_mean", "encoder.embed.feat_std",
                                     "temperature", "anomaly.", "neighbours.")


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``alertbroker train``."""
    p = argparse.ArgumentParser(prog="alertbroker train", description=(train_module.__doc__ or "").split("\n")[0])
    p.add_argument("--data", help="training-table directory (train/validation.parquet)")
    p.add_argument("--simulate", type=int, default=0,
                   help="simulate this many objects into a temporary folder and train on them")
    p.add_argument("--sim-seed", type=int, default=7, help="seed of --simulate")
    p.add_argument("--photoz", default="test_dc2_training_9816",
                   help="photo-z training sample: DC2 photometry file, pz-rail-base test name, 'broad' "
                        "(pzflow's galaxies with photerr LSST noise, models.photoz_broad) or 'none'")
    p.add_argument("--out", default="models/weights/default.pt", help="checkpoint path")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--init", help="start from this checkpoint's weights (--steps 0: refit "
                                  "calibration and anomaly forest only); a photo-z-only checkpoint "
                                  "(trained without --data, e.g. on --photoz broad) starts any model")
    helps = {"exclude_generator": "comma-separated generators whose rows are dropped from train and validation",
             "only_generator": "comma-separated generators: train and validate on their rows only",
             "temperature_fit": "pooled (validation NLL) or widest-generator (largest per-generator T)",
             "augment_views": "extra training views stretched in time and tilted in colour (models.augment)",
             "augment_stretch": "time stretch s log-uniform in [1/(1+x), 1+x] for --augment-views",
             "augment_colour": "colour tilt across u..y (mag, 1 sigma) for --augment-views",
             "adversarial_weight": "weight of the class-conditional generator critic, gradient reversed "
                                   "(models.adversarial); 0 = off",
             "lc_dropout": "share of training rows whose whole light curve is masked for the step, so the "
                           "classes are also learnt from host and feature tokens alone (models.ssl); 0 = off",
             "distill_from": "teacher: an ensemble manifest (.json, e.g. models/weights/ensemble.json) or a "
                             "checkpoint, whose mean probabilities the model also learns (models.distill)",
             "distill_weight": "weight of the distillation loss (needs --distill-from); 0 = off"}
    choices: dict[str, tuple[str, ...]] = {"temperature_fit": ("pooled", "widest-generator")}
    for name, default in asdict(TrainConfig()).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=helps.get(name),
                       choices=choices.get(name))
    for name, default in asdict(EncoderConfig()).items():
        if name == "images":
            p.add_argument("--images", action="store_true",
                           help="read the cutouts as image tokens (training renders each example's stamps)")
        elif name not in ("n_features", "feature_names"):  # both come from the feature registry
            p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    f = ForestConfig()
    p.add_argument("--forest-edges", default=",".join(map(str, f.edges)),
                   help="detection counts that open a new anomaly-forest stratum")
    p.add_argument("--forest-trees", type=int, default=f.n_trees, help="trees per forest")
    p.add_argument("--forest-samples", type=int, default=f.max_samples, help="samples per tree")
    nb = NeighbourConfig()
    p.add_argument("--bank-size", type=int, default=nb.n_bank, help="neighbour-bank rows per stratum")
    p.add_argument("--bank-k", type=int, default=nb.k, help="neighbours averaged by the bank score")
    p.add_argument("--anomaly-score", default=nb.score, choices=SCORES, help="served anomaly score")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and train; returns an exit code."""
    a = build_parser().parse_args(argv)
    if a.simulate:
        import tempfile

        from broker.sim import simulate

        with tempfile.TemporaryDirectory(prefix="alertbroker-train-") as tmp:
            simulate(a.simulate, a.sim_seed, tmp, progress=not a.quiet)
            a.data = str(Path(tmp) / "training")
            return _run(a, argv)
    return _run(a, argv)


def _run(a: argparse.Namespace, argv: list[str] | None) -> int:
    if a.data is None and a.photoz == "none":
        print("alertbroker train: give --data and/or --photoz", file=sys.stderr)
        return 2
    cfg = TrainConfig(**{k: getattr(a, k) for k in asdict(TrainConfig())})
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if a.device == "auto" else a.device))
    log = (lambda m: None) if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    taxonomy: dict[str, Any] = {"name": "none", "class_ids": [], "class_names": []}
    cls_train = cls_val = z_data = None
    val_groups: np.ndarray | None = None
    train_groups: np.ndarray | None = None
    gens: list[str] = []
    if a.data:
        try:
            tables = load_class_tables(Path(a.data), cfg.early_views, cfg.seed, cfg.max_objects,
                                       GeneratorFilter.parse(cfg.exclude_generator, cfg.only_generator), log,
                                       scenes=a.images or cfg.bogus_fraction > 0, bogus_fraction=cfg.bogus_fraction,
                                       augment_views=cfg.augment_views,
                                       augment=Augment(cfg.augment_stretch, cfg.augment_colour))
        except ValueError as e:
            print(f"alertbroker train: {e}", file=sys.stderr)
            return 2
        taxonomy, cls_train, cls_val = tables.taxonomy, tables.train, tables.val
        val_groups, gens, train_groups = tables.val_groups, tables.generators, tables.train_groups
    if a.photoz == BROAD_TEST:
        print(f"alertbroker train: --photoz {BROAD_TEST} is the held-out part of the broad sample", file=sys.stderr)
        return 2
    if a.photoz != "none":
        cols = photometry_columns(a.photoz, cfg.seed)
        z_data = photometry_tokens(cols, 0)
        if a.images:  # the photo-z head sees each galaxy as a template would show it
            from models.cutout_data import photometry_scenes

            z_data.scene = photometry_scenes(cols, np.random.default_rng(cfg.seed + 7))
    enc = EncoderConfig(**{k: getattr(a, k) for k in asdict(EncoderConfig())
                           if k not in ("n_features", "feature_names")})
    forest = ForestConfig(edges=tuple(int(e) for e in a.forest_edges.split(",") if e.strip()),
                          n_trees=a.forest_trees, max_samples=a.forest_samples)
    nbr = NeighbourConfig(n_bank=a.bank_size, k=a.bank_k, score=a.anomaly_score)
    mcfg = ModelConfig(encoder=enc, n_classes=max(len(taxonomy["class_ids"]), 1), forest=forest,
                       neighbours=nbr, real_bogus=cfg.bogus_fraction > 0)
    init, ck = None, {}
    if a.init:
        ck = torch.load(a.init, map_location="cpu", weights_only=True)
        photoz_only = not ck["taxonomy"]["class_ids"]  # pretrained photo-z: its class head is dropped
        if not photoz_only and list(ck["taxonomy"]["class_ids"]) != list(taxonomy["class_ids"]):
            print("alertbroker train: --init checkpoint has another taxonomy", file=sys.stderr)
            return 2
        old = ModelConfig.from_dict(ck["config"])
        mcfg = ModelConfig(encoder=old.encoder, n_classes=mcfg.n_classes if photoz_only else old.n_classes,
                           n_components=old.n_components, forest=forest, neighbours=nbr,
                           real_bogus=old.real_bogus or mcfg.real_bogus)
        init = ck["state_dict"]
        if photoz_only:  # nothing but the photo-z path was trained: no feature norm, no class head
            init = {k: v for k, v in init.items() if not k.startswith(PHOTOZ_ONLY_DROP)}
    log(f"training on {device}: {len(cls_train or [])} light curves, {len(z_data or [])} galaxies")
    if cfg.distill_weight > 0 and not (cfg.distill_from and cls_train is not None):
        print("alertbroker train: --distill-weight needs --distill-from and --data", file=sys.stderr)
        return 2
    try:
        model, metrics = train(mcfg, cfg, cls_train, cls_val, z_data, device, log, init, val_groups, train_groups,
                               list(taxonomy["class_ids"]))
    except ValueError as e:  # a distillation teacher of another taxonomy, or an unreadable manifest
        print(f"alertbroker train: {e}", file=sys.stderr)
        return 2
    parts = [p for td in (cls_train, z_data) if td is not None
             for p in (td.tokens["lc"], td.tokens["host"], td.tokens["feat"], td.label, td.z)]
    info = {**asdict(cfg), "data": f"simulate({a.simulate}, seed={a.sim_seed})" if a.simulate
            else str(a.data), "photoz": str(a.photoz),
            "command": "alertbroker train " + " ".join(argv if argv is not None else sys.argv[1:]),
            "generators": ",".join(gens)}
    if init is not None and cfg.steps == 0:  # a refit keeps the record of how the weights were trained
        info = {**ck["train"], "refit": info["command"]}
    out = save_checkpoint(a.out, model, taxonomy, metrics, data_hash(*parts), info)
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f" checkpoint={out}")
    return 0


