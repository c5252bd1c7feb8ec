"""Operations: structured JSON logs, and one HTTP port for /metrics, /healthz and /readyz."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _jsonable(v: Any) -> Any:
    """JSON-safe value; integers beyond 2**53 (64-bit ids) become strings, as JavaScript needs."""
    if v is None or isinstance(v, (bool, float, str)):
        return v
    if isinstance(v, int):
        return str(v) if abs(v) > 2**53 else v
    return str(v)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every ``extra=`` field (alert ids...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}  # fmt: skip
        for k, v in vars(record).items():
            if k not in _STD:
                out[k] = _jsonable(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Root logging: ``fmt="json"`` for structured logs (one object a line), else plain text."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class Health:
    """Liveness and readiness of a runner, as seen by its loop.

    Live: the loop went round within ``stall_s`` seconds. Ready: live, started, not stopping.
    """

    def __init__(self, stall_s: float = 60.0) -> None:
        self.stall_s = stall_s
        self.beat = time.monotonic()
        self.started = False
        self.stopping = False

    def tick(self) -> None:
        """Called by the loop on every round."""
        self.beat = time.monotonic()
        self.started = True

    def live(self) -> bool:
        """The loop is not stuck."""
        return time.monotonic() - self.beat < self.stall_s

    def ready(self) -> bool:
        """Consuming: started, live, and not shutting down."""
        return self.started and not self.stopping and self.live()


def serve(port: int, registry: Any, health: Health, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on ``host:port`` in a daemon thread.

    ``host`` defaults to loopback (``Settings.metrics_host``): the endpoints are unauthenticated, so
    exposing them on every interface is a deployment decision (compose sets ``0.0.0.0``).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            path = self.path.split("?")[0]
            if path == "/metrics":
                code, body, ctype = 200, generate_latest(registry), CONTENT_TYPE_LATEST
            elif path in ("/healthz", "/readyz"):
                ok = health.live() if path == "/healthz" else health.ready()
                code, ctype = (200 if ok else 503), "application/json"
                since = round(time.monotonic() - health.beat, 3)
                body = json.dumps({"ok": ok, "started": health.started, "stopping": health.stopping,
                                   "seconds_since_loop": since}).encode()
            else:
                code, body, ctype = 404, b"not found", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True, name="ops-http").start()
    return srv
