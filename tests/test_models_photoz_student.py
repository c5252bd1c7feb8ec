"""The distilled host-only photo-z: inputs, distillation, serving, checkpoints and the command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from broker.features import HostMatch, host_tokens
from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import dc2_path, photometry_tokens, read_photometry
from models.heads import PHOTOZ_COLUMNS, mixture_summary
from models.model import MultimodalModel
from models.photoz_student import N_INPUTS, augment, student_inputs
from models.photoz_student_train import cli_main, distil, teacher_mixtures, with_student
from models.predictor import MultimodalPredictor
from tests.test_models_encoder import TINY

TAX = {"name": "toy", "class_ids": [2222, 2223, 2224], "class_names": ["a", "b", "c"]}
Q50 = PHOTOZ_COLUMNS.index("q50")


def _hosts(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Host tokens of the first ``n`` DC2 training galaxies (shuffled by ``seed``) and their redshifts."""
    cols = read_photometry(dc2_path("test_dc2_training_9816"))
    idx = np.random.default_rng(seed).permutation(len(cols["redshift"]))[:n]
    td = photometry_tokens({k: v[idx] for k, v in cols.items()}, 0)
    return torch.from_numpy(td.tokens["host"]), torch.from_numpy(td.tokens["host_mask"]), td.z


def _tiny(student: int = 0) -> MultimodalModel:
    torch.manual_seed(0)
    return MultimodalModel(replace(TINY, photoz_student=student)).eval()


def test_inputs_read_only_the_magnitudes_and_colours_need_both_bands() -> None:
    mag = np.array([[22.0, 21.5, 21.0, 20.8, 20.7, 99.0]], np.float32)
    err = np.full((1, 6), 0.05, np.float32)
    tok, mask = host_tokens(HostMatch(host_id=np.array([0]), ra=np.array([1.0]), dec=np.array([2.0]),
                                      sep_arcsec=np.array([0.7]), dlr=np.array([1.3]), mag=mag, magerr=err))
    x = student_inputs(torch.from_numpy(tok), torch.from_numpy(mask))
    assert x.shape == (1, N_INPUTS)
    flags, colours = x[0, 12:18], x[0, 18:]
    assert flags.tolist() == [1, 1, 1, 1, 1, 0]  # y is missing (99)
    assert torch.allclose(colours[:4], torch.tensor([0.5, 0.5, 0.2, 0.1]), atol=1e-5)
    assert colours[4] == 0  # z - y: y is missing
    moved = tok.copy()
    moved[0, 6, 2], moved[0, 7, 2] = 5.0, 9.0  # separation and DLR tokens: not read
    assert torch.equal(student_inputs(torch.from_numpy(moved), torch.from_numpy(mask)), x)


def test_augment_keeps_two_bands_and_zeroes_what_it_drops() -> None:
    host, mask, _ = _hosts(400)
    gen = torch.Generator().manual_seed(1)
    h2, m2 = augment(host, mask, gen, drop=0.9)
    assert bool(((m2[:, :6].sum(1) >= 2) | (mask[:, :6].sum(1) < 2)).all())
    assert bool((m2 <= mask).all()) and bool((h2[~m2] == 0).all())
    moved = (h2[:, :6, 2] != host[:, :6, 2]) & m2[:, :6]
    assert moved.float().mean() > 0.5  # magnitudes redrawn within their errors


def test_distillation_brings_the_student_to_its_teacher() -> None:
    torch.set_num_threads(1)
    host, mask, _ = _hosts(1500)
    model = with_student(_tiny(), 32)
    teacher = mixture_summary(*teacher_mixtures(model, host, mask))[:, Q50]
    assert model.photoz_student is not None

    def gap() -> float:
        with torch.no_grad():
            return float((mixture_summary(*model.photoz_student(host, mask))[:, Q50] - teacher).abs().mean())  # type: ignore[misc]

    before = gap()
    losses = distil(model, host, mask, steps=1000, batch=256, draws=8, lr=3e-3, seed=0)
    after = gap()
    assert losses[-1] < losses[0] and after < 0.3 * before, (before, after, losses)


def test_a_checkpoint_with_a_student_serves_it_and_keeps_every_other_weight(tmp_path: Path) -> None:
    teacher = _tiny()
    model = with_student(teacher, 16)
    for k, v in teacher.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    path = save_checkpoint(tmp_path / "s.pt", model, TAX, {}, "0" * 16, {})
    loaded, meta = load_checkpoint(path)
    assert loaded.cfg.photoz_student == 16 and loaded.photoz_student is not None
    host, mask, _ = _hosts(64)
    with torch.no_grad():
        served = loaded.photoz_from_host(host, mask)
        assert torch.equal(served, mixture_summary(*loaded.photoz_student(host, mask)))
        assert not torch.equal(served, mixture_summary(*loaded.photoz_mixture_from_host(host, mask)))
    pred = MultimodalPredictor(loaded, meta)
    cached = pred.photoz_cache(host.numpy(), mask.numpy())
    np.testing.assert_allclose(cached, served.numpy(), rtol=1e-5, atol=1e-6)
    # a checkpoint without one serves the encoder's host path, as before
    old, _ = load_checkpoint(save_checkpoint(tmp_path / "t.pt", teacher, TAX, {}, "0" * 16, {}))
    assert old.photoz_student is None and old.cfg == replace(loaded.cfg, photoz_student=0)


def test_command_writes_a_checkpoint_and_reports_teacher_and_student(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    init = save_checkpoint(tmp_path / "init.pt", _tiny(), TAX, {}, "0" * 16, {"seed": 0})
    out = tmp_path / "student.pt"
    assert cli_main(["--init", str(init), "--out", str(out), "--hidden", "16", "--copies", "2", "--steps", "500",
                     "--batch", "256", "--draws", "4"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "teacher q50 on 20449 DC2 validation galaxies" in text and "other_weights_identical=1" in text
    model, meta = load_checkpoint(out)
    info = meta["train"]["photoz_student"]
    assert model.cfg.photoz_student == 16 and info["hidden"] == 16 and info["n"] == 20449
    assert 0 <= info["dq50_median"] < 1 and np.isfinite(info["student_sigma_nmad"])
