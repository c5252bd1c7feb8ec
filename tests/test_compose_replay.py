"""Deployment files parse and name real commands; replay orders alerts by observation time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from broker.decode import BatchDecoder
from broker.samples import stream
from consumers.cli import build_parser
from consumers.messages import InMessage
from consumers.replay import order_for_replay

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_has_kafka_registry_two_workers_prometheus_grafana() -> None:
    doc = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    assert {"kafka", "schema-registry", "worker-1", "worker-2", "prometheus", "grafana"} <= set(doc["services"])
    assert doc["services"]["kafka"]["image"].startswith("apache/kafka")
    for name in ("worker-1", "worker-2"):
        w = doc["services"][name]
        args = build_parser().parse_args(w["command"])
        assert args.command == "run" and args.source.startswith("kafka://") and args.metrics_port == 8000
        assert w["environment"]["ALERTBROKER__REGISTRY__URL"] == "http://schema-registry:8081"
    ids = {doc["services"][n]["environment"]["ALERTBROKER__TRANSACTIONAL_ID"] for n in ("worker-1", "worker-2")}
    assert len(ids) == 2, "each replica needs its own transactional id"
    prom = yaml.safe_load((ROOT / "compose" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["worker-1:8000", "worker-2:8000"]


def _metric_names() -> set[str]:
    from broker.metrics import Metrics

    names = set()
    for fam in Metrics().registry.collect():  # labelled families have no samples yet: use the type
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(fam.type, [""])
        names |= {fam.name + suf for suf in suffixes}
    return names


def test_alert_rules_and_dashboard_use_real_metric_names() -> None:
    known = _metric_names() | {"up"}
    rules = yaml.safe_load((ROOT / "compose" / "alerts.yml").read_text())["groups"][0]["rules"]
    dash = json.loads((ROOT / "compose" / "grafana" / "dashboards" / "alertbroker.json").read_text())
    exprs = [r["expr"] for r in rules] + [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for expr in exprs:
        for name in re.findall(r"\b(alertbroker_[a-z_]+|up)\b", expr):
            assert name in known, f"{name} in {expr!r} is not exported"
    assert {r["alert"] for r in rules} >= {"AlertbrokerLagGrowing", "AlertbrokerDeadLetterRate",
                                           "AlertbrokerP99LatencyHigh"}  # fmt: skip


def test_replay_order_is_by_mjd_with_undecodable_last(decoder: BatchDecoder) -> None:
    msgs = stream(6, seed=3)  # diaSource mjd grows with the id
    shuffled = [msgs[4], b"junk", msgs[0], msgs[5], msgs[2], msgs[1], msgs[3]]
    order, mjd, keys = order_for_replay([InMessage(value=m) for m in shuffled], decoder)
    assert order == [2, 5, 4, 6, 0, 3, 1]
    assert keys[1] == b"" and all(k.isdigit() for i, k in enumerate(keys) if i != 1)
