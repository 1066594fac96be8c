"""Gunicorn's logger for the server: its own lines and the access log as JSON objects, like the app's.

``gunicorn.conf.py`` sets it as ``logger_class``. An access line names the client, the request's
method, path (never the query string) and status, its size, duration, request id and the model
version that answered; nothing of the body.
"""

from __future__ import annotations

import logging
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
        log = self.access_log
        if not log.isEnabledFor(logging.INFO):
            return
        request_id = model_version = None
        for name, value in resp.headers:  # the two headers the line keeps, in one pass
            lowered = name.lower()
            if lowered == "x-request-id":
                request_id = value
            elif lowered == "x-model-version":
                model_version = value
        peer = environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR") or environ.get("REMOTE_ADDR", "-")
        entry = {
            "remote": environ.get("REMOTE_ADDR", "-"),  # the client, once a trusted proxy named it
            "peer": peer,  # the other end of the connection (the proxy, behind one)
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),  # never the query string: it may carry data
            "status": int(str(resp.status).split(None, 1)[0]),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": request_id,
            "model_version": model_version,
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }
        try:
            # the record made and handed to the handlers directly: ``info`` would also walk the stack to
            # find its caller, which no access line shows (a few microseconds a request)
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra={"http": entry}))
        except Exception:  # a log line must never fail a request
            self.error("access log failed")
