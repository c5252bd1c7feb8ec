"""``alertbroker train-photoz-student``: distil the served host-only photo-z into a small network.

The checkpoint given by ``--init`` is loaded and frozen. Its host-only photo-z mixture
(:meth:`~models.model.MultimodalModel.photoz_mixture_from_host`, calibrated) is the teacher, on the
DC2 training galaxies its photo-z head learned from (``pz-rail-base``), each seen ``--copies`` times
(the first as is, the rest with magnitudes redrawn within their errors and bands dropped:
:func:`~models.photoz_student.augment`). The student (:class:`~models.photoz_student.HostPhotozStudent`)
learns the teacher's mixture by the likelihood of redshifts drawn from it. Every other weight and
buffer is written back unchanged (checked after writing)::

    alertbroker train-photoz-student --init models/weights/default.pt --out /tmp/pzs/student.pt

It prints teacher and student on the DC2 *validation* galaxies (never seen by either), the
difference between their medians, and one ``key=value`` line. The served figures (per alert,
through ``enrich()``): ``alertbroker eval served --checkpoint OUT``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import report_part, save_part, start_part, with_new_part
from models.data import dc2_path, photometry_tokens, read_photometry
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.metrics import photoz_stats
from models.model import MultimodalModel
from models.photoz_student import augment, distillation_loss, sample_mixture

_PREFIX = "photoz_student."
_Q50 = PHOTOZ_COLUMNS.index("q50")


def with_student(model: MultimodalModel, hidden: int) -> MultimodalModel:
    """A copy of ``model`` with a new (untrained) student of width ``hidden``; every other weight kept."""
    return with_new_part(model, replace(model.cfg, photoz_student=hidden), _PREFIX)


@torch.no_grad()
def teacher_mixtures(model: MultimodalModel, host: torch.Tensor, mask: torch.Tensor,
                     chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The teacher's calibrated mixtures ``(logw, mu, sigma)`` of host tokens (n, H, 4)."""
    parts = [model.photoz_mixture_from_host(host[s:s + chunk], mask[s:s + chunk]) for s in range(0, len(host), chunk)]
    logw, mu, sigma = (torch.cat([p[i] for p in parts]).float() for i in range(3))
    return logw, mu, sigma


def distil(model: MultimodalModel, host: torch.Tensor, mask: torch.Tensor, steps: int, batch: int, draws: int,
           lr: float, seed: int) -> list[float]:  # fmt: skip
    """Fit ``model.photoz_student`` to the teacher's mixtures on ``host``/``mask``; return the loss every 500 steps."""
    student = model.photoz_student
    assert student is not None
    logw, mu, sigma = teacher_mixtures(model, host, mask)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    student.train()
    losses, run = [], 0.0
    for step in range(steps):
        idx = torch.randint(0, len(host), (batch,), generator=gen)
        z = sample_mixture(logw[idx], mu[idx], sigma[idx], draws, gen)
        loss = distillation_loss(student(host[idx], mask[idx]), z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run += float(loss.detach())
        if (step + 1) % 500 == 0:
            losses.append(run / 500)
            run = 0.0
    student.eval()
    return losses


@torch.no_grad()
def compare(model: MultimodalModel, name: str = "test_dc2_validation_9816") -> dict[str, float]:
    """Teacher and student q50 against the true redshift on a DC2 file, and their difference."""
    td = photometry_tokens(read_photometry(dc2_path(name)), 0)
    host, mask = torch.from_numpy(td.tokens["host"]), torch.from_numpy(td.tokens["host_mask"])
    assert model.photoz_student is not None
    t = mixture_summary(*teacher_mixtures(model, host, mask)).numpy()[:, _Q50]
    s = mixture_summary(*model.photoz_student(host, mask)).numpy()[:, _Q50]
    dz = np.abs(s - t) / (1 + t)
    out = {f"teacher_{k}": v for k, v in photoz_stats(t, td.z).items()}
    out |= {f"student_{k}": v for k, v in photoz_stats(s, td.z).items()}
    return out | {"n": float(len(t)), "dq50_median": float(np.median(dz)), "dq50_p99": float(np.quantile(dz, 0.99)),
                  "dq50_above_0.01": float(np.mean(dz > 0.01))}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """Options of ``alertbroker train-photoz-student``."""
    p = argparse.ArgumentParser(prog="alertbroker train-photoz-student", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--init", type=Path, required=True, help="checkpoint whose host-only photo-z is the teacher")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--data", default="test_dc2_training_9816", help="DC2 file (pz-rail-base name or path)")
    p.add_argument("--hidden", type=int, default=128, help="width of the student's two hidden layers")
    p.add_argument("--copies", type=int, default=16, help="views of each galaxy (the first unaugmented)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--draws", type=int, default=16, help="teacher redshifts drawn per galaxy and step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alertbroker train-photoz-student``."""
    a = build_parser().parse_args(argv)
    model, meta, before, t0 = start_part(a.init, _PREFIX, a.threads, a.seed)
    path = Path(a.data) if Path(a.data).exists() else dc2_path(a.data)
    td = photometry_tokens(read_photometry(path), 0)
    host, mask = torch.from_numpy(td.tokens["host"]), torch.from_numpy(td.tokens["host_mask"])
    gen = torch.Generator().manual_seed(a.seed)
    views = [(host, mask)] + [augment(host, mask, gen) for _ in range(a.copies - 1)]
    new = with_student(model, a.hidden)
    losses = distil(new, torch.cat([v[0] for v in views]), torch.cat([v[1] for v in views]), a.steps, a.batch,
                    a.draws, a.lr, a.seed)  # fmt: skip
    info = compare(new)
    print("loss every 500 steps: " + " ".join(f"{x:.4f}" for x in losses))
    for who in ("teacher", "student"):
        print(f"{who} q50 on {info['n']:.0f} DC2 validation galaxies: sigma_nmad={info[f'{who}_sigma_nmad']:.4f} "
              f"outliers={info[f'{who}_outliers']:.4f} bias={info[f'{who}_bias']:+.4f}")
    train_meta = {**meta.get("train", {}), "photoz_student": {"init": str(a.init), "data": str(path),
                  "hidden": a.hidden, "copies": a.copies, "steps": a.steps, "seed": a.seed, **info}}  # fmt: skip
    return report_part(a.out, info, save_part(a.out, new, meta, train_meta, before, _PREFIX), t0)


if __name__ == "__main__":
    raise SystemExit(cli_main())
