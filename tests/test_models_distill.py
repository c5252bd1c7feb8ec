"""Distillation from a seed ensemble (models/distill.py, ``alertbroker train --distill-from``)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("polars")

from models.checkpoint import load_checkpoint  # noqa: E402
from models.distill import EnsembleTeacher, soft_cross_entropy, teacher_files  # noqa: E402
from models.ensemble import write_manifest  # noqa: E402
from models.train import cli_main  # noqa: E402
from tests.test_models_train import TINY_ARGS, write_survey  # noqa: E402


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_survey(tmp_path_factory.mktemp("distill"), (("train", 40), ("validation", 20), ("test", 10)), seed=1)


def _train(survey: Path, name: str, *extra: str) -> Path:
    out = survey / name
    assert cli_main(["--data", str(survey), "--photoz", "none", "--out", str(out), *TINY_ARGS, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def teachers(survey: Path) -> tuple[Path, Path]:
    return _train(survey, "t0.pt", "--seed", "3"), _train(survey, "t1.pt", "--seed", "4")


def test_soft_cross_entropy_is_cross_entropy_on_one_hot_targets() -> None:
    logits = torch.randn(7, 4)
    y = torch.randint(0, 4, (7,))
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, y))


def test_teacher_is_the_mean_of_its_checkpoints(survey: Path, teachers: tuple[Path, Path]) -> None:
    manifest = survey / "t.json"
    write_manifest(manifest, teachers[0], [teachers[1]])
    assert teacher_files(manifest) == list(teachers) and teacher_files(teachers[0]) == [teachers[0]]
    model, meta = load_checkpoint(teachers[0])
    teacher = EnsembleTeacher.load(manifest, meta["taxonomy"]["class_ids"])
    n, t = 5, 12
    nf = model.cfg.encoder.n_features
    tok = {"lc": torch.randn(n, t, 5), "lc_mask": torch.ones(n, t, dtype=torch.bool),
           "host": torch.zeros(n, 8, 4), "host_mask": torch.zeros(n, 8, dtype=torch.bool),
           "feat": torch.randn(n, nf, 2), "feat_mask": torch.ones(n, nf, dtype=torch.bool)}
    tok["lc"][..., 1] = torch.randint(0, 6, (n, t)).float()  # band index
    want = torch.stack([load_checkpoint(f)[0].class_probs(**tok) for f in teachers]).mean(0)
    got = teacher(tok)
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got.sum(-1), torch.ones(n), atol=1e-5)


def test_distillation_trains_another_model_and_is_recorded(survey: Path, teachers: tuple[Path, Path]) -> None:
    plain = _train(survey, "plain.pt")
    taught = _train(survey, "taught.pt", "--distill-from", str(teachers[0]), "--distill-weight", "1.0")
    a, b = (torch.load(p, weights_only=True) for p in (plain, taught))
    assert b["train"]["distill_from"] == str(teachers[0]) and b["train"]["distill_weight"] == 1.0
    assert a["train"]["distill_weight"] == 0.0
    # the same seed and data: only the added loss separates them
    head = [k for k in a["state_dict"] if k.startswith("cls_head.") and k.endswith("weight")]
    assert head and any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in head)


def test_teacher_of_another_taxonomy_or_none_is_refused(survey: Path, teachers: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ck = torch.load(teachers[0], weights_only=True)
    ck["taxonomy"] = {**ck["taxonomy"], "class_ids": list(reversed(ck["taxonomy"]["class_ids"]))}
    other = survey / "other.pt"
    torch.save(ck, other)
    base = ["--data", str(survey), "--photoz", "none", "--out", str(survey / "x.pt"), *TINY_ARGS]
    assert cli_main([*base, "--distill-from", str(other), "--distill-weight", "1"]) == 2
    assert "are not the training data's" in capsys.readouterr().err
    assert cli_main([*base, "--distill-weight", "1"]) == 2
    assert "needs --distill-from" in capsys.readouterr().err
    assert not (survey / "x.pt").exists()
