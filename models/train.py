"""``alertbroker train``: fit the multimodal model and write a self-describing checkpoint.

Class and anomaly heads learn from a training-table directory (``train.parquet``,
``validation.parquet``; layout :mod:`broker.sim.training`), each object seen with
its full light curve plus ``--early-views`` copies cut at a random 1st..10th
detection. The photo-z head learns from a DC2 photometry file (host tokens only;
default ``test_dc2_training_9816`` of ``pz-rail-base``), 10% of which is held out
to calibrate the mixture widths. Temperature scaling uses the validation table;
the anomaly isolation forest (:mod:`models.anomaly`) is fitted on training
embeddings and light-curve descriptors (full and early views, as alerts arrive).
Runs are deterministic for a seed on CPU. ``--init CKPT --steps 0`` re-runs only
the calibration and the forest on a trained checkpoint's weights.

A model in one command (``--simulate`` runs ``alertbroker simulate`` into a temporary folder
first; the shipped weights' recipe is in docs/models.md, "The shipped model since 2026-12-02")::

    alertbroker train --simulate 30000 --sim-seed 7 --steps 2500 --threads 1 --out my.pt
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from broker.features.registry import FEATURE_INDEX
from models.adversarial import adversarial_loss, make_critic, ramp
from models.augment import Augment
from models.data import TokenData
from models.distill import EnsembleTeacher, soft_cross_entropy
from models.generator_split import widest_generator_temperature
from models.heads import fit_sigma_scale, fit_temperature, mixture_nll
from models.metrics import photoz_stats
from models.model import TOKEN_KEYS, ModelConfig, MultimodalModel, anomaly_context
from models.ssl import contrastive_loss, drop_light_curves, hide_tokens, recon_loss


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (stored in the checkpoint's ``train`` entry)."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    early_views: int = 2
    max_objects: int = 0
    threads: int = 2
    recon_weight: float = 0.0
    recon_frac: float = 0.25
    contrastive_weight: float = 0.0
    exclude_generator: str = ""
    only_generator: str = ""
    temperature_fit: str = "pooled"
    bogus_fraction: float = 0.0
    image_dropout: float = 0.1
    augment_views: int = 0
    augment_stretch: float = Augment.stretch  # the strengths' defaults live in models.augment
    augment_colour: float = Augment.colour
    adversarial_weight: float = 0.0
    lc_dropout: float = 0.0
    distill_from: str = ""
    distill_weight: float = 0.0


def batch_tensors(td: TokenData, idx: np.ndarray, device: torch.device, images: bool = False,
                  rng: np.random.Generator | None = None, drop: float = 0.0) -> dict[str, torch.Tensor]:
    """Token tensors of rows ``idx`` (trimmed to the longest real light curve).

    With ``images``, the rows' cutouts are rendered from their scenes (:mod:`models.cutout_data`;
    without scenes the image modality is absent) and a share ``drop`` of them masked, so the model
    also learns alerts that arrive without stamps.
    """
    toks = {k: td.tokens[k][idx] for k in TOKEN_KEYS}
    if toks["lc_mask"].shape[1]:
        width = max(int(toks["lc_mask"].sum(1).max()), 1)
        toks["lc"], toks["lc_mask"] = toks["lc"][:, :width], toks["lc_mask"][:, :width]
    if images and td.scene is not None:
        from models.cutout_data import render_tokens

        rng = rng if rng is not None else np.random.default_rng(0)
        toks["img"], toks["img_mask"] = render_tokens({k: v[idx] for k, v in td.scene.items()}, rng)
        toks["img_mask"] &= rng.uniform(size=len(idx)) >= drop
    return {k: torch.as_tensor(v).to(device) for k, v in toks.items()}


def fit_feature_norm(model: MultimodalModel, td: TokenData) -> None:
    """Per-feature mean/std of the real feature-token values (into the embedding buffers).

    Slot ``j`` of the model is the registry feature ``cfg.feature_names[j]``: its values are the
    tokens whose ``feature_id`` is that feature's registry id (matched by id, not position).
    """
    fe, fm = td.tokens["feat"], td.tokens["feat_mask"]
    emb = model.encoder.embed
    ids = fe[..., 0]
    for j, name in enumerate(model.cfg.encoder.feature_names):
        v = fe[..., 1][fm & (ids == FEATURE_INDEX[name])]
        if len(v) > 1:
            emb.feat_mean[j] = float(np.median(v))
            emb.feat_std[j] = float(max(np.std(v), 1e-3))


@torch.no_grad()
def run_model(model: MultimodalModel, td: TokenData, device: torch.device, bs: int = 1024
              ) -> dict[str, np.ndarray]:
    """Raw outputs over a whole dataset (eval mode), as numpy arrays."""
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    rng = np.random.default_rng(12345)  # the same stamps every run
    for s in range(0, len(td), bs):
        o = model(**batch_tensors(td, np.arange(s, min(s + bs, len(td))), device, model.cfg.encoder.images, rng))
        for k, v in o.items():
            outs.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v).numpy() for k, v in outs.items()}


def train(model_cfg: ModelConfig, cfg: TrainConfig, cls_train: TokenData | None,
          cls_val: TokenData | None, z_data: TokenData | None, device: torch.device,
          log: Any = print, init: dict[str, torch.Tensor] | None = None,
          val_groups: np.ndarray | None = None, train_groups: np.ndarray | None = None,
          class_ids: list[int] | None = None) -> tuple[MultimodalModel, dict[str, float]]:
    """Train and calibrate a model; returns it with validation metrics.

    ``init`` is a state dict to start from (``--init``); its calibration and
    anomaly buffers are refitted, and keys this model lacks are ignored. ``val_groups``
    (generator of each ``cls_val`` row) enables ``cfg.temperature_fit = "widest-generator"``;
    ``train_groups`` (generator of each ``cls_train`` row) enables ``cfg.adversarial_weight``
    (:mod:`models.adversarial`); ``class_ids`` (the taxonomy's) is checked against a
    ``cfg.distill_from`` teacher's (:mod:`models.distill`).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = MultimodalModel(model_cfg)
    if init is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in init.items()
                               if k in own and own[k].shape == v.shape}, strict=False)
    z_fit = z_cal = None
    if z_data is not None:
        perm = rng.permutation(len(z_data))
        n_cal = len(z_data) // 10
        z_cal, z_fit = z_data.take(np.sort(perm[:n_cal])), z_data.take(np.sort(perm[n_cal:]))
    cls_idx = np.flatnonzero((cls_train.label >= 0) & (cls_train.n_det > 0)) if cls_train else None
    pool = cls_idx  # what batches are drawn from: the classified examples, plus artefacts
    if cls_train is not None and cls_train.real is not None and model_cfg.real_bogus:
        pool = np.flatnonzero(((cls_train.label >= 0) | (cls_train.real < 0.5)) & (cls_train.n_det > 0))
    images = model_cfg.encoder.images
    if cls_train is not None:
        if init is None or "encoder.embed.feat_mean" not in init:  # a started model keeps its own
            fit_feature_norm(model, cls_train)
        counts = np.bincount(cls_train.label[cls_idx], minlength=model_cfg.n_classes)
        w = (counts.sum() / np.maximum(counts, 1) / model_cfg.n_classes) ** 0.5
        class_w = torch.as_tensor(w, dtype=torch.float32, device=device)
    model.to(device)
    if cfg.steps == 0:
        return calibrate(model, cls_train, cls_val, z_cal, cls_idx, device, log, cfg.seed, val_groups,
                         cfg.temperature_fit)
    critic, group_idx = make_critic(cfg.adversarial_weight, model_cfg.encoder.d_model, model_cfg.n_classes,
                                    None if cls_train is None else len(cls_train), train_groups, device, log)
    teacher = EnsembleTeacher.load(cfg.distill_from, class_ids or [], device) if cfg.distill_weight > 0 else None
    params = [*model.parameters(), *(critic.parameters() if critic is not None else ())]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    t0, bs = time.time(), cfg.batch_size
    adv = torch.zeros(())
    for step in range(1, cfg.steps + 1):
        model.train()
        loss = torch.zeros((), device=device)
        if cls_train is not None:
            idx = np.sort(rng.choice(pool, bs))
            tok = batch_tensors(cls_train, idx, device, images, rng, cfg.image_dropout)
            hide = torch.zeros_like(tok["lc_mask"])
            target = teacher(tok) if teacher is not None else None  # the whole view, before any masking
            if cfg.contrastive_weight > 0:  # on the unmasked tokens: whole modalities are masked
                loss = loss + cfg.contrastive_weight * contrastive_loss(model, tok)
            if cfg.lc_dropout > 0:  # why: models.ssl.drop_light_curves
                tok["lc_mask"] = tok["lc_mask"] & ~drop_light_curves(len(idx), cfg.lc_dropout, rng, device)
            if cfg.recon_weight > 0:  # hide a share of the points; the embedding redraws them
                hide = hide_tokens(tok["lc_mask"], cfg.recon_frac, rng)
                tok["lc_mask"] = tok["lc_mask"] & ~hide
            out = model(**tok)
            y = torch.as_tensor(cls_train.label[idx], device=device)
            known = y >= 0  # artefacts have no class
            loss = loss + F.cross_entropy(out["logits"].float()[known], y[known], weight=class_w)
            if target is not None:  # why: models.distill
                loss = loss + cfg.distill_weight * soft_cross_entropy(out["logits"][known], target[known])
            if "rb_logit" in out and cls_train.real is not None:
                real = torch.as_tensor(cls_train.real[idx], device=device)
                loss = loss + F.binary_cross_entropy_with_logits(out["rb_logit"].float(), real)
            if hide.any():
                loss = loss + cfg.recon_weight * recon_loss(model, out["emb"], tok["lc"], hide)
            if critic is not None and group_idx is not None:
                g = torch.as_tensor(group_idx[idx], device=device)
                adv = adversarial_loss(critic, out["emb"], y, g, ramp(step, cfg.steps))
                loss = loss + cfg.adversarial_weight * adv
        if z_fit is not None:
            idx = np.sort(rng.choice(len(z_fit), 2 * bs))
            tok = batch_tensors(z_fit, idx, device, images, rng, cfg.image_dropout)
            noise = torch.as_tensor(rng.standard_normal(tok["host"].shape[:2]), dtype=torch.float32,
                                    device=device)
            tok["host"][..., 2] += noise * tok["host"][..., 3] * tok["host_mask"]
            out = model(**tok)
            zt = torch.as_tensor(z_fit.z[idx], dtype=torch.float32, device=device)
            loss = loss + mixture_nll(out["logw"], out["mu"], out["sigma"], zt).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % max(cfg.steps // 20, 1) == 0 or step == cfg.steps:
            # a critic that knows nothing scores <= log(generators): it sees the class
            critic_note = f" critic {adv.item():.3f}" if critic is not None else ""
            log(f"step {step}/{cfg.steps} loss {loss.item():.4f}{critic_note} ({time.time() - t0:.0f} s)")
    return calibrate(model, cls_train, cls_val, z_cal, cls_idx, device, log, cfg.seed, val_groups,
                         cfg.temperature_fit)


def calibrate(model: MultimodalModel, cls_train: TokenData | None, cls_val: TokenData | None,
              z_cal: TokenData | None, cls_idx: np.ndarray | None, device: torch.device,
              log: Any = print, seed: int = 0, val_groups: np.ndarray | None = None,
              temperature_fit: str = "pooled") -> tuple[MultimodalModel, dict[str, float]]:
    """Fit temperature, photo-z width scale and the anomaly model; compute metrics.

    The temperature minimises the pooled validation NLL (``temperature_fit="pooled"``) or is the
    widest of the per-generator ones (``"widest-generator"``, needs ``val_groups``); both are
    recorded in the metrics when ``val_groups`` is given.
    """
    from sklearn.metrics import f1_score

    metrics: dict[str, float] = {}
    if cls_train is not None and cls_idx is not None:
        tr = cls_train.take(cls_idx)
        ctx = anomaly_context(run_model(model, tr, device)).numpy()
        model.anomaly.fit(ctx, tr.tokens["lc"], tr.tokens["lc_mask"], seed)
        model.neighbours.fit(ctx, tr.tokens["lc"], tr.tokens["lc_mask"], seed)
        metrics["embedding_explained_variance"] = float(model.embedding.fit(ctx).sum())
    if cls_val is not None:
        ok = (cls_val.label >= 0) & (cls_val.n_det > 0)
        val = cls_val.take(np.flatnonzero(ok))
        logits = run_model(model, val, device)["logits"]
        t = metrics["temperature_pooled"] = fit_temperature(logits, val.label)
        if val_groups is not None:
            metrics["temperature_widest_generator"] = widest_generator_temperature(
                logits, val.label, val_groups[ok])
        if temperature_fit == "widest-generator":
            if val_groups is None:
                raise ValueError("temperature_fit='widest-generator' needs the validation rows' generators")
            t = metrics["temperature_widest_generator"]
        model.temperature.fill_(t)
        metrics["val_macro_f1"] = float(f1_score(val.label, logits.argmax(1), average="macro"))
        metrics["temperature"] = float(model.temperature)
        if model.real_bogus is not None and cls_val.real is not None:
            metrics.update(_calibrate_real_bogus(model, cls_val, device))
    if z_cal is not None:
        o = run_model(model, z_cal, device)
        logw, mu, sigma = (torch.as_tensor(o[k]) for k in ("logw", "mu", "sigma"))
        model.z_sigma_scale.fill_(fit_sigma_scale(logw, mu, sigma, torch.as_tensor(z_cal.z, dtype=torch.float32)))
        zp = (np.exp(o["logw"]) * o["mu"]).sum(1)
        metrics["cal_sigma_nmad"] = photoz_stats(zp, z_cal.z)["sigma_nmad"]
        metrics["z_sigma_scale"] = float(model.z_sigma_scale)
    log("metrics " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return model.eval(), metrics


def _calibrate_real_bogus(model: MultimodalModel, val: TokenData, device: torch.device) -> dict[str, float]:
    """Fit the real/bogus temperature on the validation examples (artefacts included); its AUROC."""
    from sklearn.metrics import roc_auc_score

    from models.images import fit_binary_temperature

    assert model.real_bogus is not None and val.real is not None
    sub = val.take(np.flatnonzero(val.n_det > 0))
    logit = torch.as_tensor(run_model(model, sub, device)["rb_logit"])
    real = np.asarray(sub.real)
    model.real_bogus.temperature.fill_(fit_binary_temperature(logit, torch.as_tensor(real)))
    auc = roc_auc_score(real, logit.numpy()) if 0 < real.mean() < 1 else float("nan")
    return {"val_real_bogus_auroc": float(auc), "real_bogus_temperature": float(model.real_bogus.temperature)}


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train``; returns an exit code (options: :mod:`models.train_cli`)."""
    from models.train_cli import main

    return main(argv)


if __name__ == "__main__":
    raise SystemExit(cli_main())
