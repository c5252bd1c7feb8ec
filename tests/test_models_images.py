"""The image modality in the model: patch tokens, masking, the real/bogus head, serving through enrich().

Real Rubin alerts (tests/data/real_alerts, see its README for their origin and attribution) are
served by a tiny untrained image model: what is tested is the plumbing (stamps read, tokens
masked, fields published), not the scores.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
import torch

from broker.annotations import enriched_definition
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.features import featurize
from broker.schemas import SchemaStore
from broker.tokens import IMG_CHANNELS, IMG_SIZE
from broker.wire import HEADER_SIZE, parse_header
from models.checkpoint import load_checkpoint, save_checkpoint
from models.encoder import EncoderConfig
from models.images import N_PATCHES, fit_binary_temperature
from models.model import ModelConfig, MultimodalModel
from models.predictor import MultimodalPredictor, load_default

REAL = Path(__file__).parent / "data" / "real_alerts" / "wire"
TAX = {"name": "t", "class_ids": [111, 112], "class_names": ["a", "b"]}


def _tiny(images: bool, real_bogus: bool) -> MultimodalModel:
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(d_model=16, n_latents=4, n_blocks=1, n_heads=2, images=images),
                      n_classes=2, real_bogus=real_bogus)
    return MultimodalModel(cfg).eval()


def _tokens(n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    return {"lc": torch.randn(n, 7, 5), "lc_mask": torch.ones(n, 7, dtype=torch.bool),
            "host": torch.zeros(n, 8, 4), "host_mask": torch.zeros(n, 8, dtype=torch.bool),
            "feat": torch.zeros(n, 0, 2), "feat_mask": torch.zeros(n, 0, dtype=torch.bool),
            "img": torch.as_tensor(rng.normal(size=(n, len(IMG_CHANNELS), IMG_SIZE, IMG_SIZE)), dtype=torch.float32)}


def test_masked_stamps_change_nothing_and_real_ones_do() -> None:
    model = _tiny(True, True)
    tok = _tokens(3, np.random.default_rng(1))
    with torch.no_grad():
        base = model(**{k: v for k, v in tok.items() if k != "img"})
        masked = model(**tok, img_mask=torch.zeros(3, dtype=torch.bool))
        seen = model(**tok, img_mask=torch.ones(3, dtype=torch.bool))
        tok["img"][1] += 3.0
        moved = model(**tok, img_mask=torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(masked["logits"], base["logits"])
    torch.testing.assert_close(masked["rb_logit"], base["rb_logit"])
    assert not torch.allclose(seen["logits"], base["logits"])
    diff = (moved["rb_logit"] - seen["rb_logit"]).abs()
    assert diff[1] > 1e-4 and diff[0] < 1e-6 and diff[2] < 1e-6  # one alert's stamps move only that alert
    assert model.encoder.patches is not None and N_PATCHES == (IMG_SIZE // 6) ** 2


def test_binary_temperature_recovers_a_known_scale() -> None:
    rng = np.random.default_rng(0)
    true_logit = torch.as_tensor(rng.normal(0, 2, 20000))
    real = torch.as_tensor(rng.uniform(size=20000) < torch.sigmoid(true_logit).numpy()).float()
    t = fit_binary_temperature(true_logit * 3.0, real)  # over-confident by 3x
    assert 2.5 < t < 3.6


def _enrich(tmp_path: Path, images: bool, real_bogus: bool, store: SchemaStore) -> list[dict[str, Any]]:
    path = save_checkpoint(tmp_path / f"m{images}{real_bogus}.pt", _tiny(images, real_bogus), TAX, {}, "x", {})
    model, meta = load_checkpoint(path)
    assert model.cfg.encoder.images is images and model.cfg.real_bogus is real_bogus
    pred = MultimodalPredictor(model, meta)
    msgs = [p.read_bytes() for p in sorted(REAL.glob("*.bin"))]
    enr = Enricher(BatchDecoder(store, cutouts=pred.reads_images), pred, featurizer=featurize)
    res = enr.enrich(msgs)
    assert not res.dead and len(res.outputs) == len(msgs)
    out = []
    for o in res.outputs:
        sid = parse_header(o.value) % 1_000_000
        schema = fastavro.parse_schema(enriched_definition(store.get(sid).definition))
        bio = io.BytesIO(o.value)
        bio.seek(HEADER_SIZE)
        out.append(fastavro.schemaless_reader(bio, schema, None)["annotations"])  # type: ignore[call-overload,index]
    return out


def test_an_image_model_reads_real_stamps_through_enrich(tmp_path: Path, store: SchemaStore) -> None:
    anns = _enrich(tmp_path, True, True, store)
    assert all(a["cutoutsRead"] for a in anns)
    rb = [a["realBogus"] for a in anns if not a["solarSystem"]]
    assert rb and all(0.0 <= v <= 1.0 for v in rb)
    assert all(a["realBogus"] is None for a in anns if a["solarSystem"])


@pytest.mark.parametrize("images,real_bogus", [(False, False), (False, True)])
def test_a_model_without_images_does_not_claim_them(tmp_path: Path, store: SchemaStore, images: bool,
                                                     real_bogus: bool) -> None:
    anns = _enrich(tmp_path, images, real_bogus, store)
    assert not any(a["cutoutsRead"] for a in anns)
    assert any(a["realBogus"] is not None for a in anns) == real_bogus


def test_the_shipped_model_loads_without_the_image_modality() -> None:
    pred = load_default()
    assert pred.reads_images is False and pred.model.real_bogus is None


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_models_train import write_survey

    return write_survey(tmp_path_factory.mktemp("survey_img"), (("train", 60), ("validation", 30), ("test", 30)))


def _train(survey: Path, name: str, *extra: str) -> Path:
    from models.train import cli_main

    out = survey / name
    args = ["--data", str(survey), "--photoz", "none", "--out", str(out), "--d-model", "16", "--n-latents", "4",
            "--n-blocks", "1", "--n-heads", "2", "--batch-size", "32", "--steps", "120", "--early-views", "1",
            "--threads", "1", "--quiet", "--bogus-fraction", "0.5", *extra]
    assert cli_main(args) == 0
    return out


def test_training_with_stamps_learns_real_from_bogus_and_eval_compares(survey: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from models.evaluate_cutouts import cli_main as eval_main

    img, plain = _train(survey, "img.pt", "--images"), _train(survey, "plain.pt")
    ck = torch.load(img, weights_only=True)
    assert ck["config"]["encoder"]["images"] is True and ck["config"]["real_bogus"] is True
    # artefacts among the validation objects: the stamps tell them apart after 120 tiny steps
    assert ck["metrics"]["val_real_bogus_auroc"] > 0.8
    assert torch.load(plain, weights_only=True)["config"]["encoder"]["images"] is False
    capsys.readouterr()
    real = Path(__file__).parent / "data" / "real_alerts" / "or4_v7_1.avro"
    assert eval_main(["--data", str(survey), "--checkpoint", f"img={img}", "--checkpoint", f"plain={plain}",
                      "--bogus-fraction", "0.5", "--archive", str(real), "--real", str(REAL)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = dict(kv.split("=") for kv in last.split())
    for label in ("img", "plain"):
        for view in ("k1", "k3", "full"):
            assert 0.0 <= float(figures[f"{label}_{view}_rb_auroc"]) <= 1.0
        assert float(figures[f"{label}_model_us_per_alert"]) > 0 and float(figures[f"{label}_enrich_us_per_alert"]) > 0
    assert float(figures["stamps_read"]) == 1.0  # every real OR4 alert's three stamps read
    # the real alerts of schema 10.0 carry the pipeline's isDipole flag: 4 of them are dipoles
    assert float(figures["img_real_dipoles"]) == 4 and 0 <= float(figures["img_real_dipole_auroc"]) <= 1
    assert "img_photoz_host_template_sigma_nmad" in figures and "plain_photoz_host_template_sigma_nmad" not in figures


@pytest.mark.parametrize("read", [True, False])
def test_the_cutouts_setting_decides_whether_an_image_model_reads_stamps(tmp_path: Path, read: bool) -> None:
    from broker.settings import Settings
    from consumers.app import make_enricher

    path = save_checkpoint(tmp_path / "img.pt", _tiny(True, True), TAX, {}, "x", {})
    enr = make_enricher(Settings.load(model=str(path), cutouts=read), scores=False)
    assert enr.decoder.cutouts is read
    msgs = [p.read_bytes() for p in sorted(REAL.glob("*.bin"))][:6]
    res = enr.enrich(msgs)
    assert not res.dead
    vals = [o.value for o in res.outputs]
    from broker.flatten import flatten

    df = flatten(BatchDecoder(enr.decoder.store).decode(vals), vals)
    assert df["cutouts_read"].to_list() == [read] * len(msgs)
