"""``alertbroker similar``: nearest alerts in the embedding space, from a saved index, an archive or a topic.

Synthetic stores check the index against numpy brute force (exact and IVF), 64-bit ids and the named
errors (unknown id, no embeddings, every kind of corrupt index). The real Rubin alerts of the tests,
enriched once with the shipped default model, check the command end to end: saved index, archive and
Kafka topic give the same neighbours, and plain alerts are enriched on the way.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from broker.annotations import EMBEDDING_DIM
from broker.decode import BatchDecoder
from broker.flatten import flatten
from broker.schemas import SchemaStore
from broker.settings import Settings
from consumers import similar, similar_index
from consumers.similar_index import CorruptIndex, SimilarIndex, UnknownAlertId
from consumers.similar_store import STORE_SCHEMA
from tests.archive_util import write_containers
from tests.kafka_util import ROOT, create_topics

REAL = ROOT / "tests" / "data" / "real_alerts"


def frame(vectors: np.ndarray, ids: np.ndarray, objects: np.ndarray) -> pl.DataFrame:
    """A store frame for ``vectors`` with the given 64-bit ids."""
    n = len(vectors)
    return pl.DataFrame({"diaSourceId": ids, "diaObjectId": objects, "mjd": np.arange(n, dtype=float),
                         "band": "r", "n_det": np.full(n, 3), "best_class": "EB", "best_class_id": 2325,
                         "best_prob": 0.5, "classification_state": "classified", "sparkline": "▁█",
                         "embedding": vectors.astype(np.float32)}).cast(STORE_SCHEMA)  # type: ignore[arg-type]  # fmt: skip


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, EMBEDDING_DIM)) * 3
    return (centres[rng.integers(0, 50, n)] + rng.standard_normal((n, EMBEDDING_DIM))).astype(np.float16)


def brute(vectors: np.ndarray, q: int, k: int, objects: np.ndarray) -> np.ndarray:
    """Rows of the ``k`` nearest other-object vectors to row ``q`` (float32 of the float16 values)."""
    x = vectors.astype(np.float32)
    d = ((x - x[q]) ** 2).sum(1)
    d[objects == objects[q]] = np.inf
    return np.argsort(d, kind="stable")[:k]


def test_exact_search_matches_brute_force_and_keeps_64_bit_ids() -> None:
    v = clustered(600)
    ids = np.int64(2**62) + np.arange(600, dtype=np.int64) * 7 + 1  # above 2**53: a float would round them
    objects = np.int64(2**61) + np.arange(600, dtype=np.int64) // 2  # pairs of alerts share an object
    idx = SimilarIndex.build(frame(v, ids, objects), v)
    assert idx.params["kind"] == "exact"
    for q in (0, 17, 333):
        hits = idx.search(v[q].astype(np.float32), 8, {int(ids[q])}, {int(objects[q])})
        want = brute(v, q, 8, objects)
        assert hits["diaSourceId"].to_list() == ids[want].tolist()
        exp = np.sqrt(((v[want].astype(np.float32) - v[q].astype(np.float32)) ** 2).sum(1))
        np.testing.assert_allclose(hits["distance"].to_numpy(), exp, rtol=1e-5, atol=1e-5)
    row = idx.lookup(source_id=int(ids[5])).row(0, named=True)
    assert row["diaSourceId"] == int(ids[5]) and type(row["diaSourceId"]) is int
    assert idx.lookup(object_id=int(objects[4]))["diaSourceId"].to_list() == [int(ids[5]), int(ids[4])]  # latest first


def test_approximate_index_recall_against_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(similar_index, "EXACT_MAX_ROWS", 1000)
    v = clustered(20_000, seed=1)
    ids = np.arange(20_000, dtype=np.int64) + 10**15
    idx = SimilarIndex.build(frame(v, ids, ids), v)
    assert idx.params["kind"] == "ivf" and idx.params["nlist"] == int(np.sqrt(20_000))
    recall = [len(set(idx.search(v[q].astype(np.float32), 10, {int(ids[q])})["diaSourceId"].to_list())
                  & set(ids[brute(v, q, 10, ids)].tolist())) / 10 for q in range(0, 20_000, 400)]  # fmt: skip
    assert np.mean(recall) >= 0.95


def test_saved_index_round_trip_and_every_corruption_is_named(tmp_path: Path) -> None:
    v = clustered(300)
    ids = np.arange(300, dtype=np.int64) + 2**60
    mem = SimilarIndex.build(frame(v, ids, ids), v)
    want = mem.search(v[9].astype(np.float32), 5, {int(ids[9])})
    good = tmp_path / "good"
    good.mkdir()
    SimilarIndex.build(frame(v, ids, ids), v).save(good)
    loaded = SimilarIndex.load(good)
    assert loaded.search(v[9].astype(np.float32), 5, {int(ids[9])})["diaSourceId"].to_list() == \
        want["diaSourceId"].to_list()  # fmt: skip
    with pytest.raises(UnknownAlertId):
        loaded.lookup(source_id=12345)

    def broken(name: str, change: object) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        change(d)  # type: ignore[operator]
        return d

    cases = {
        "truncated index": lambda d: (d / "index.faiss").write_bytes((d / "index.faiss").read_bytes()[:100]),
        "flipped store byte": lambda d: (d / "store.parquet").write_bytes(
            (lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:])((d / "store.parquet").read_bytes())),
        "missing store": lambda d: (d / "store.parquet").unlink(),
        "garbage manifest": lambda d: (d / "similar-index.json").write_text("{not json"),
        "manifest without keys": lambda d: (d / "similar-index.json").write_text("{}"),
    }
    for name, change in cases.items():
        with pytest.raises(CorruptIndex):
            SimilarIndex.load(broken(name.replace(" ", "_"), change))
    # a garbage index whose manifest was rewritten to match it: faiss itself refuses it
    d = broken("garbage_index", lambda d: (d / "index.faiss").write_bytes(b"\x00garbage" * 50))
    manifest = json.loads((d / "similar-index.json").read_text())
    manifest["index_sha256"] = similar_index._sha256(d / "index.faiss")
    (d / "similar-index.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptIndex, match="RuntimeError"):
        SimilarIndex.load(d)
    err = io.StringIO()
    assert similar.main(["1", "--in", str(d)], io.StringIO(), err) == 1
    assert err.getvalue().startswith("alertbroker similar: corrupt_index:")


@pytest.fixture(scope="module")
def enriched(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The 75 real alerts, enriched with the shipped default model (wire format)."""
    from consumers.app import make_enricher

    raw = [p.read_bytes() for p in sorted((REAL / "wire").glob("*.bin"))]
    res = make_enricher(Settings.load(None), scores=False).enrich(raw)
    assert not res.dead and len(res.outputs) == 75
    return [o.value for o in res.outputs]


@pytest.fixture(scope="module")
def archive(enriched: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The enriched alerts as Avro container files, one per schema id."""
    return write_containers(enriched, tmp_path_factory.mktemp("enriched"))


def query(args: list[str]) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    rc = similar.main([*args, "--format", "jsonl"], out, err)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_real_alerts_saved_index_and_archive_agree(archive: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    assert similar.main(["index", "--in", str(archive), "--out", str(tmp_path / "idx")], out, io.StringIO()) == 0
    built = json.loads(out.getvalue())
    assert built["read"] == 75 and built["indexed"] + built["without_embedding"] == 75 and built["indexed"] >= 70
    store = pl.read_parquet(tmp_path / "idx" / "store.parquet")
    q = store.sort("n_det", descending=True).row(0, named=True)  # the longest real history
    rc, saved, _ = query([str(q["diaSourceId"]), "--in", str(tmp_path / "idx"), "-k", "6"])
    assert rc == 0 and len(saved) == 6
    dist = [r["distance"] for r in saved]
    assert dist == sorted(dist) and dist[0] > 0
    assert all(r["diaObjectId"] != q["diaObjectId"] for r in saved)  # its own object left out by default
    assert {r["diaSourceId"] for r in saved} <= set(store["diaSourceId"].to_list())  # exact 64-bit ints
    rc, mem, err = query([str(q["diaSourceId"]), "--in", str(archive), "-k", "6"])
    assert rc == 0 and [r["diaSourceId"] for r in mem] == [r["diaSourceId"] for r in saved]
    assert "indexed=" in err
    table = io.StringIO()
    assert similar.main([str(q["diaSourceId"]), "--in", str(tmp_path / "idx"), "-k", "3"], table, io.StringIO()) == 0
    lines = table.getvalue().splitlines()
    assert lines[0].startswith(f"query diaSourceId {q['diaSourceId']}") and len(lines) == 5
    assert str(saved[0]["diaSourceId"]) in lines[2] and saved[0]["sparkline"] in lines[2]
    rc, by_object, _ = query([str(q["diaObjectId"]), "--object", "--in", str(tmp_path / "idx"), "-k", "6"])
    assert rc == 0 and by_object == saved  # the object's only alert here is the query


def test_real_plain_alerts_are_enriched_on_the_way_or_named(enriched: list[bytes], archive: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in REAL.glob("*.avro"):
        shutil.copy(f, plain / f.name)
    rc, rows, err = query(["1", "--in", str(plain), "--no-enrich"])
    assert rc == 1 and rows == [] and "no_embeddings" in err and "plain" in err
    want_id = query_id(archive)
    rc, from_plain, err = query([str(want_id), "--in", str(plain), "-k", "5"])
    assert rc == 0 and "enriched 75 plain Rubin alerts" in err
    rc, from_enriched, _ = query([str(want_id), "--in", str(archive), "-k", "5"])
    assert [r["diaSourceId"] for r in from_plain] == [r["diaSourceId"] for r in from_enriched]
    rc, rows, err = query(["12345", "--in", str(archive)])
    assert rc == 1 and "unknown_id" in err and "12345" in err


def test_an_embedding_of_the_wrong_length_or_not_finite_is_counted_not_fatal(enriched: list[bytes]) -> None:
    def field(v: bytes) -> bytes | None:  # the encoded embedding field (branch, length, 32 bytes), if any
        flat = flatten(BatchDecoder(SchemaStore()).decode([v]), [v])
        emb = flat["embedding"][0]
        if emb is None:
            return None
        enc = b"\x02\x40" + np.asarray(emb, "<f2").tobytes()
        assert v.count(enc) == 1
        return enc

    with_emb = [(v, f) for v in enriched if (f := field(v)) is not None]
    (v0, f0), (v1, f1) = with_emb[:2]
    odd = v0.replace(f0, b"\x02\x3e" + f0[2:-1])  # now 31 bytes: not 16 float16 values
    nan = v1.replace(f1, f1[:2] + np.full(EMBEDDING_DIM, np.nan, "<f2").tobytes())  # 16 NaN values
    with_emb = [v for v, _ in with_emb]
    col = similar.Collector(Settings.load(None), enrich=False)
    col.add([odd, nan, *with_emb[2:]])
    idx = col.finish()
    assert col.counts["bad_annotations"] == 2 and col.counts["indexed"] == len(with_emb) - 2
    assert idx.index.ntotal == len(with_emb) - 2 and np.isfinite(idx.index.reconstruct_n(0, 1)).all()


def test_bench_similar_runs_and_its_model_column_matches_the_store(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import bench_similar

    idx, _, _ = similar.collect(str(archive), Settings.load(None))
    assert isinstance(idx.store.source, pl.DataFrame)
    d = idx.store.source
    # a "truth" that is the served best class: the bench's model column must then be 1 where one was given
    truth = d.group_by("diaObjectId").agg(pl.col("best_class").first().alias("class_name"))
    truth.write_parquet(tmp_path / "truth.parquet")
    assert bench_similar.main(["--enriched", str(archive), "--truth", str(tmp_path / "truth.parquet"),
                               "--n", "3000", "--queries", "20", "-k", "3"]) == 0  # fmt: skip
    last = dict(kv.split("=") for kv in capsys.readouterr().out.splitlines()[-1].split())
    classified = d.filter(pl.col("best_class").is_not_null()).height
    assert float(last["model_right"]) == pytest.approx(classified / d.height, abs=1e-3)
    assert 0 <= float(last["chance"]) <= float(last["agree"]) <= 1
    assert float(last["mix_recall"]) == 1.0 and float(last["iso_recall"]) == 1.0  # exact below 50k rows
    assert float(last["mix_p50_ms"]) > 0 and float(last["mix_e2e_p50_ms"]) > 0


def test_an_in_memory_query_over_its_cap_is_named_but_a_saved_index_is_not_capped(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(similar, "MAX_IN_MEMORY", 10)
    rc, rows, err = query(["1", "--in", str(archive)])
    assert rc == 1 and rows == [] and err.startswith("alertbroker similar: input_too_large:")
    out = io.StringIO()
    assert similar.main(["index", "--in", str(archive), "--out", str(tmp_path / "idx")], out, io.StringIO()) == 0
    assert json.loads(out.getvalue())["indexed"] > 10


def query_id(archive: Path) -> int:
    """A real alert with an embedding and a long history."""
    idx, _, _ = similar.collect(str(archive), Settings.load(None))
    assert isinstance(idx.store.source, pl.DataFrame)
    return int(idx.store.source.sort("n_det", descending=True)["diaSourceId"][0])


@pytest.mark.kafka
def test_real_alerts_from_a_kafka_topic(kafka_bootstrap: str, topic_prefix: str, enriched: list[bytes],
                                        archive: Path) -> None:  # fmt: skip
    from confluent_kafka import Producer

    topic = f"{topic_prefix}-enriched"
    create_topics(kafka_bootstrap, [topic])
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for v in enriched:
        p.produce(topic, v)
    assert p.flush(30) == 0
    qid = query_id(archive)
    rc, from_topic, err = query([str(qid), "--in", f"kafka://{kafka_bootstrap}/{topic}", "-k", "5", "--timeout", "3"])
    assert rc == 0 and "read=75" in err
    _, from_archive, _ = query([str(qid), "--in", str(archive), "-k", "5"])
    assert from_topic == from_archive
