"""The flux forecast: head, calibration, checkpoint, codec and enrich() wiring (annotations v3 ``forecast``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from broker.annotations import (  # noqa: E402
    ANNOTATIONS_SCHEMA,
    ANNOTATIONS_VERSION,
    FORECAST_HORIZONS_DAYS,
    FORECAST_QUANTILE_NAMES,
    encode_annotations,
)
from broker.annotations_codec import FORECAST_SHAPE, AnnotationEncoder  # noqa: E402
from broker.tokens import LC_FIELDS  # noqa: E402
from models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from models.forecast import ForecastHead, pinball, to_njy  # noqa: E402
from models.model import ModelConfig, MultimodalModel  # noqa: E402


def _rising(n: int, seed: int = 0, d: int = 8) -> tuple[Any, ...]:
    """Light curves rising linearly in r (token units per day); targets 1..5 days after the last point."""
    g = torch.Generator().manual_seed(seed)
    slope = 0.2 + 0.3 * torch.rand(n, 1, generator=g)
    t = torch.arange(-9.0, 1.0)[None].expand(n, -1)  # 10 points, the last at the alert (t = 0)
    lc = torch.zeros(n, 10, len(LC_FIELDS))
    lc[..., 0] = torch.sign(t) * torch.log1p(t.abs())
    lc[..., 1] = 2.0
    lc[..., 2] = 3.0 + slope * t
    lc[..., 3] = 0.05
    lc[..., 4] = 1.0
    dt = 1.0 + 4.0 * torch.rand(n, 4, generator=g)
    y = 3.0 + slope * dt + 0.05 * torch.randn(n, 4, generator=g)
    return torch.zeros(n, d), lc, torch.ones(n, 10, dtype=torch.bool), dt, torch.full((n, 4), 2), y


def test_a_tiny_head_learns_that_a_rising_curve_keeps_rising() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention
    head = ForecastHead(8, hidden=32)
    emb, lc, mask, dt, band, y = _rising(128)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    valid = torch.ones_like(y, dtype=torch.bool)
    first = pinball(head.raw(emb, lc, mask, dt, band), y, valid).item()
    for _ in range(120):
        loss = pinball(head.raw(emb, lc, mask, dt, band), y, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    emb, lc, mask, _, _, _ = _rising(64, seed=1)
    q = head.raw(emb, lc, mask, torch.full((64, 2), 3.0), torch.full((64, 2), 2)).detach()
    # last flux 3.0; 3 days later a rise of 0.6-1.5: the median forecast is clearly above the last point
    assert (q[..., 2] > 3.4).float().mean() > 0.9
    assert (q[:, 0, 0] < q[:, 0, 2]).all() and (q[:, 0, 2] < q[:, 0, 4]).all()


def test_served_intervals_are_ordered_and_only_for_observed_bands() -> None:
    head = ForecastHead(8, hidden=16)
    emb, lc, mask, *_ = _rising(5)
    assert torch.isnan(head.grid(emb, lc, mask)).all()  # uncalibrated: no forecast
    head.widen.copy_(torch.tensor([[0.1, 3.0, 0.2, 2.5]] * 3))  # odd factors must not break the order
    head.fitted.fill_(1.0)
    q = head.grid(emb, lc, mask)
    assert q.shape == (5, *FORECAST_SHAPE)
    assert torch.isfinite(q[:, 2]).all() and torch.isnan(q[:, [0, 1, 3, 4, 5]]).all()  # only r has data
    assert (q[:, 2].diff(dim=-1) >= 0).all()


def test_calibration_makes_too_narrow_intervals_cover_68_and_90_percent() -> None:
    g = torch.Generator().manual_seed(3)
    m = 20_000
    dt = 10.0 * torch.rand(m, generator=g)
    raw = torch.tensor([-0.5, -0.3, 0.0, 0.3, 0.5]).expand(m, -1)  # a tenth of the true spread
    y = 3.0 * torch.randn(m, generator=g)
    head = ForecastHead(4)
    head.calibrate(raw, dt, y)
    y2 = 3.0 * torch.randn(m, generator=g)
    q = head.apply_widen(raw, dt)
    cov68 = ((q[:, 1] <= y2) & (y2 <= q[:, 3])).float().mean()
    cov90 = ((q[:, 0] <= y2) & (y2 <= q[:, 4])).float().mean()
    assert abs(float(cov68) - 0.68) < 0.02 and abs(float(cov90) - 0.90) < 0.015


def test_tokens_go_back_to_njy_with_the_flux_scale() -> None:
    q = np.array([[0.0, np.arcsinh(2.0)]], np.float32)
    assert to_njy(q, np.array([2.0])) == pytest.approx(np.array([[0.0, 200.0]]), rel=1e-5)


def _forecast() -> np.ndarray:
    fc = np.full(FORECAST_SHAPE, np.nan, np.float32)
    fc[1] = np.sort(np.random.default_rng(0).normal(1000, 300, (len(FORECAST_HORIZONS_DAYS), 5)), axis=1)
    fc[4] = fc[1] * 2
    return fc


@pytest.mark.parametrize("fc", [None, np.full(FORECAST_SHAPE, np.nan, np.float32), _forecast()],
                         ids=["none", "all-nan", "g-and-z"])
def test_forecast_bytes_match_fastavro_and_round_trip(fc: np.ndarray | None) -> None:
    enc = AnnotationEncoder("b", "1.2", "m", None, "tax", (1,), ("one",))
    got = enc.encode(None, None, None, None, 5, 7, 11, 12, forecast=fc)
    want_fc = None
    if fc is not None and np.isfinite(fc).any():
        want_fc = [{"band": b, "dtDays": h, **dict(zip(FORECAST_QUANTILE_NAMES, fc[i, j].tolist(), strict=True))}
                   for i, b in ((1, "g"), (4, "z")) for j, h in enumerate(FORECAST_HORIZONS_DAYS)]
    rec = {"schemaVersion": ANNOTATIONS_VERSION, "brokerName": "b", "brokerVersion": "1.2", "modelName": "m",
           "modelVersion": None, "taxonomy": "tax", "classifications": None, "photoz": None, "anomalyScore": None,
           "host": None,
           "nDetections": 5, "nForced": 7, "ingestTimestamp": 11, "processedTimestamp": 12, "solarSystem": False,
           "reliability": None, "classificationState": "no_model", "embedding": None, "forecast": want_fc}
    assert got == encode_annotations(rec)
    back: Any = fastavro.schemaless_reader(io.BytesIO(got), fastavro.parse_schema(["null", ANNOTATIONS_SCHEMA]), None)
    if want_fc is None:
        assert back["forecast"] is None
    else:
        assert [r["band"] for r in back["forecast"]] == [r["band"] for r in want_fc]
        for r, w in zip(back["forecast"], want_fc, strict=True):
            assert [r[k] for k in w if k != "band"] == pytest.approx([w[k] for k in w if k != "band"], rel=1e-6)
    if want_fc is not None:  # 6 records of 26 bytes, plus the union, count and end bytes
        assert len(got) - len(enc.encode(None, None, None, None, 5, 7, 11, 12)) == 6 * 26 + 2


def test_a_forecast_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="forecast has shape"):
        AnnotationEncoder("b", "1").encode(None, None, None, None, 1, 0, 1, 2, forecast=np.zeros((6, 3, 4)))


def test_head_travels_in_the_checkpoint_and_older_checkpoints_forecast_nothing(tmp_path: Path) -> None:
    from models.encoder import EncoderConfig
    from models.predictor import MultimodalPredictor

    cfg = ModelConfig(encoder=EncoderConfig(d_model=16, n_latents=4, n_heads=2, n_blocks=1), n_classes=3)
    nf = cfg.encoder.n_features
    model = MultimodalModel(cfg)
    model.forecast.fitted.fill_(1.0)
    tax = {"name": "t", "class_ids": [1, 2, 3], "class_names": ["a", "b", "c"]}
    path = save_checkpoint(tmp_path / "m.pt", model, tax, {}, "h")
    ck = torch.load(path, weights_only=True)
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if not k.startswith("forecast.")}
    torch.save(ck, tmp_path / "old.pt")
    _, lc, mask, *_ = _rising(3)
    toks = {"lc": lc.numpy(), "lc_mask": mask.numpy(), "host": np.zeros((3, 8, 4), np.float32),
            "host_mask": np.zeros((3, 8), bool), "feat": np.zeros((3, nf, 2), np.float32),
            "feat_mask": np.zeros((3, nf), bool)}
    scale = np.log10(np.array([50.0, 60.0, 70.0]))
    new = MultimodalPredictor.from_checkpoint(path).predict_tokens(toks, scale).forecast
    old = MultimodalPredictor.from_checkpoint(tmp_path / "old.pt").predict_tokens(toks, scale).forecast
    assert new is not None and np.isfinite(new[:, 2]).all() and np.isnan(new[:, [0, 1, 3, 4, 5]]).all()
    assert old is not None and np.isnan(old).all()
    enc = AnnotationEncoder("b", "1")
    assert enc.encode(None, None, None, None, 1, 0, 1, 2, forecast=old[0]) == enc.encode(None, None, None, None,
                                                                                         1, 0, 1, 2)
    assert not load_checkpoint(tmp_path / "old.pt")[0].forecast.fitted


def test_real_alerts_get_a_forecast_in_their_observed_bands_except_moving_objects() -> None:
    import functools

    from broker.decode import BatchDecoder
    from broker.enrich import Enricher
    from broker.features import FeatureConfig, featurize
    from broker.flatten import flatten
    from broker.schemas import SchemaStore
    from models.predictor import DEFAULT_WEIGHTS, MultimodalPredictor

    values = [p.read_bytes() for p in sorted((Path(__file__).parent / "data" / "real_alerts" / "wire").glob("*.bin"))]
    store = SchemaStore()
    pred = MultimodalPredictor.from_checkpoint(DEFAULT_WEIGHTS, device="cpu", threads=1)
    res = Enricher(BatchDecoder(store), pred, featurizer=functools.partial(featurize, config=FeatureConfig())
                   ).enrich(values)  # fmt: skip
    outs = [o.value for o in sorted(res.outputs, key=lambda o: o.index)]
    df = flatten(BatchDecoder(store).decode(outs), outs)
    assert df.filter(df["solar_system"])["forecast"].is_null().all()
    scored = df.filter(~df["solar_system"] & df["best_prob"].is_not_null())
    assert scored.height > 0 and scored["forecast"].is_not_null().all()
    for fc in scored["forecast"].to_list():
        assert len(fc) % len(FORECAST_HORIZONS_DAYS) == 0
        assert [r["dtDays"] for r in fc[: len(FORECAST_HORIZONS_DAYS)]] == list(FORECAST_HORIZONS_DAYS)
        for r in fc:
            assert r["q05"] <= r["q16"] <= r["q50"] <= r["q84"] <= r["q95"]
