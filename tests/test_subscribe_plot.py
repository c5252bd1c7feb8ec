"""Subscribing (filters, outputs, client API) and plotting, on enriched archives and on Kafka."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from broker.annotations_codec import HostAnnotation
from broker.decode import BatchDecoder
from broker.enrich import Enricher
from broker.filters import Moc, compile_filter
from broker.predict import Predictions
from broker.samples import stream
from broker.schemas import SchemaStore
from consumers import plot, subscribe
from consumers.client import Subscription, start_millis
from tests.archive_util import write_containers


class TwoClass:
    name, version, taxonomy = "toy", "1", "elasticc"
    class_ids, class_names = (2222, 2332), ("SN Ia", "AGN")

    def predict(self, batch, features):  # type: ignore[no-untyped-def]
        n = len(batch)
        p = np.linspace(0.05, 0.95, n)
        pz = np.stack([np.linspace(0.1, 1.0, n), np.full(n, 0.05), *[np.linspace(0.1, 1.0, n)] * 6], axis=1)
        return Predictions(probs=np.stack([p, 1 - p], axis=1), photoz=pz, anomaly=np.arange(n, dtype=float),
                           hosts=[HostAnnotation("cat", "99", 1.0, 2.0, 0.5, 1.0)] * n)  # fmt: skip


@pytest.fixture(scope="module")
def enriched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = SchemaStore()
    values = [o.value for o in Enricher(BatchDecoder(store), TwoClass()).enrich(stream(40, seed=4)).outputs]
    return write_containers(values, tmp_path_factory.mktemp("enriched"))


def test_client_filters_by_probability_photoz_anomaly_and_band(enriched: Path) -> None:
    sub = Subscription(f"file://{enriched}", where="p_2222 > 0.5 AND photoz_mean < 0.8 AND anomaly_score >= 1")
    df = pl.concat(list(sub.batches()))
    assert df.height > 0 and (df["p_2222"] > 0.5).all() and (df["photoz_mean"] < 0.8).all()
    assert df["best_class"].to_list() == ["SN Ia"] * df.height
    assert df["host_id"].to_list() == ["99"] * df.height
    everything = pl.concat(list(Subscription(str(enriched)).batches()))
    assert everything.height == 40 and set(everything["n_det"].to_list()) == {4}
    rows = list(Subscription(str(enriched), where="diaSourceId = 7"))
    assert [r["diaSourceId"] for r in rows] == [7]


def test_cone_and_moc_filters() -> None:
    from broker.features.healpix import ang2pix

    df = pl.DataFrame({"ra": [359.9999, 0.0001, 180.0], "dec": [0.0, 0.0, 89.9]})
    assert compile_filter(cone=(0.0, 0.0, 1.0))(df).height == 2  # across the RA wrap
    moc = Moc({4: ang2pix(4, np.array([180.0]), np.array([89.9]))})
    assert compile_filter(moc=moc)(df)["dec"].to_list() == [89.9]


def test_subscribe_outputs_table_jsonl_parquet(enriched: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    assert subscribe.main([str(enriched), "--where", "p_2222 > 0.9", "--parquet", str(tmp_path / "pq")], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["mjd", "diaSourceId", "band"] and len(lines) > 1
    assert all("SN Ia" in x for x in lines[1:])
    assert pl.read_parquet(next((tmp_path / "pq").glob("*.parquet"))).height == len(lines) - 1
    out = io.StringIO()
    subscribe.main([str(enriched), "--format", "jsonl", "--limit", "3"], out)
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["diaSourceId"], str) for r in rows)


def test_start_positions() -> None:
    assert start_millis("latest") is None and start_millis(1700000000000) == 1700000000000
    assert start_millis("2026-02-25T00:00:00") == 1771977600000
    with pytest.raises(ValueError):
        Subscription("kafka://127.0.0.1:9092/x", start="committed")


def test_plot_writes_a_png(enriched: Path, tmp_path: Path) -> None:
    assert plot.main(["7", "--from", str(enriched), "--out", str(tmp_path / "a.png")]) == 0
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.kafka
def test_subscribe_from_kafka_forwards_matches(kafka_bootstrap: str, topic_prefix: str, enriched: Path) -> None:
    from confluent_kafka import Producer

    from tests.kafka_util import create_topics, read_topic

    src, fwd = f"{topic_prefix}-enriched", f"{topic_prefix}-fwd"
    create_topics(kafka_bootstrap, [src, fwd])
    store = SchemaStore()
    values = [o.value for o in Enricher(BatchDecoder(store), TwoClass()).enrich(stream(40, seed=4)).outputs]
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for v in values:
        p.produce(src, v)
    p.flush(30)
    out = io.StringIO()
    assert subscribe.main([f"kafka://{kafka_bootstrap}/{src}", "--start", "earliest", "--where", "p_2222 > 0.5",
                           "--to", f"kafka://{kafka_bootstrap}/{fwd}", "--idle-timeout", "6", "--format", "jsonl"],
                          out) == 0  # fmt: skip
    n = len(out.getvalue().splitlines())
    assert n == 20
    assert len(read_topic(kafka_bootstrap, fwd, expect=n)) == n
