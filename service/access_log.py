"""Gunicorn's logger for the server: its own lines and the access log as JSON objects, like the app's.

``gunicorn.conf.py`` sets it as ``logger_class``. An access line names the client, the request's
method, path (never the query string) and status, its size, duration, request id and the model
version that answered; nothing of the body.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from service.logs import JsonFormatter


class JsonLogger(Logger):
    """Gunicorn's logger, writing its own lines and the access log as JSON objects."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        headers = dict((k.lower(), v) for k, v in resp.headers)
        peer = environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR") or environ.get("REMOTE_ADDR", "-")
        entry = {
            "remote": environ.get("REMOTE_ADDR", "-"),  # the client, once a trusted proxy named it
            "peer": peer,  # the other end of the connection (the proxy, behind one)
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),  # never the query string: it may carry data
            "status": int(str(resp.status).split(None, 1)[0]),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": headers.get("x-request-id"),
            "model_version": headers.get("x-model-version"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info("request", extra={"http": entry})
        except Exception:  # a log line must never fail a request
            self.error("access log failed")
