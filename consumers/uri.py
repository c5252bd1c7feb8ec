"""Source and sink URIs: ``kafka://host:port[,host:port]/topic[?key=value]`` and ``file:///path``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class KafkaURI:
    """A Kafka topic. Query parameters are librdkafka overrides (e.g. ``group.id``)."""

    bootstrap: str
    topic: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileURI:
    """A file or directory (archives to read, or a directory to write)."""

    path: str


def parse_uri(uri: str) -> KafkaURI | FileURI:
    """Parse a source/sink URI; a bare path is a file URI.

    Raises
    ------
    ValueError
        For an unsupported scheme or a Kafka URI without a topic.
    """
    parts = urlsplit(uri)
    if parts.scheme == "kafka":
        topic = parts.path.lstrip("/")
        if not topic or not parts.netloc:
            raise ValueError(f"kafka URI needs host:port and a topic: {uri!r}")
        return KafkaURI(parts.netloc, topic, dict(parse_qsl(parts.query)))
    if parts.scheme == "file":
        return FileURI(parts.path if not parts.netloc else parts.netloc + parts.path)
    if parts.scheme == "":
        return FileURI(uri)
    raise ValueError(f"unsupported URI scheme {parts.scheme!r} in {uri!r} (use kafka:// or file://)")


def split_uris(text: str) -> list[str]:
    """``a,b,...`` into URIs: a Kafka URI keeps its ``host,host`` and ``topic,topic``; a path needs a ``/``."""
    out: list[str] = []
    for part in re.split(r",(?=[a-z][a-z0-9+.-]*://)", text):
        items = [p for p in part.split(",") if p]
        if "://" not in part:
            out += items
            continue
        in_path = "/" in items[0].split("://", 1)[1]
        out.append(items[0])
        for it in items[1:]:
            if in_path and "/" in it:
                out += items[items.index(it):]
                break
            out[-1] += "," + it
            in_path = in_path or "/" in it
    return out
