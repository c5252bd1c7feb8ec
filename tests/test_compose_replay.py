"""Deployment files parse and name real commands; replay orders alerts by observation time."""

from __future__ import annotations

from pathlib import Path

import yaml

from broker.decode import BatchDecoder
from broker.samples import stream
from consumers.cli import build_parser
from consumers.messages import InMessage
from consumers.replay import order_for_replay

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_has_kafka_worker_prometheus_and_a_valid_worker_command() -> None:
    doc = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())
    assert {"kafka", "worker", "prometheus"} <= set(doc["services"])
    assert doc["services"]["kafka"]["image"].startswith("apache/kafka")
    args = build_parser().parse_args(doc["services"]["worker"]["command"])
    assert args.command == "run" and args.source.startswith("kafka://") and args.metrics_port == 8000
    prom = yaml.safe_load((ROOT / "compose" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["worker:8000"]


def test_replay_order_is_by_mjd_with_undecodable_last(decoder: BatchDecoder) -> None:
    msgs = stream(6, seed=3)  # diaSource mjd grows with the id
    shuffled = [msgs[4], b"junk", msgs[0], msgs[5], msgs[2], msgs[1], msgs[3]]
    order, mjd, keys = order_for_replay([InMessage(value=m) for m in shuffled], decoder)
    assert order == [2, 5, 4, 6, 0, 3, 1]
    assert keys[1] == b"" and all(k.isdigit() for i, k in enumerate(keys) if i != 1)
