"""Tell people about alert transitions: a structured log line always, a webhook when configured.

Delivery happens on a background thread behind a bounded queue, with retries, exponential
back-off and jitter, a short timeout and a total deadline per attempt (a receiver trickling
bytes cannot hold an attempt longer); redirects are never followed (a 3xx is a failed
delivery: following one could turn the POST into a GET somewhere else). Nothing here may slow or fail serving or the
evaluation loop: a slow, failing or unreachable webhook is logged and counted, a full queue
drops its oldest notification (counted too), and ``send`` never raises. No Flask.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: Log level of the line written for each kind of notification.
LEVELS = {"firing": logging.ERROR, "warn": logging.WARNING, "resolved": logging.INFO, "retrain": logging.WARNING}
#: HTTP statuses worth another attempt; any other 4xx means the request itself is wrong.
RETRY_STATUSES = frozenset({408, 425, 429})
USER_AGENT = "prediction-server-alerts/1"


@dataclass(frozen=True)
class Notification:
    """One alert transition somebody should hear about."""

    status: str  # firing | warn | resolved; retrain: the outcome of a rule's retrain action
    model: str
    version: int
    rule: str
    description: str
    value: Any  # number, status string, or None when unknown
    threshold: Any
    since: float  # unix seconds the new state began
    details: dict[str, Any] | None = None  # retrain: champion, challenger, verdict, rollout

    def payload(self, server: str) -> dict[str, Any]:
        """Return the webhook's JSON document."""
        since_iso = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        doc = asdict(self)
        if doc["details"] is None:  # alert transitions carry none: their document stays as it was
            del doc["details"]
        return {**doc, "since_iso": since_iso, "server": server}


def backoff_delay(retry: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Return the wait before retry number ``retry`` (0-based): doubling from ``base``, capped, jittered.

    "Equal jitter": half the step is fixed and half random, so waits still grow from one
    retry to the next while replicas that failed together do not retry in lockstep.
    """
    step = min(cap, base * 2**retry)
    return step / 2 + rand() * step / 2


class Notifier:
    """Log every notification and, with ``webhook_url``, POST it as JSON from a background thread."""

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        server: str | None = None,
        timeout: float = 3.0,
        deadline: float = 10.0,
        attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        queue_size: int = 1000,
        rand: Callable[[], float] = random.random,
    ):
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"alert webhook URL must be http:// or https://, got {webhook_url!r}")
        if attempts < 1 or queue_size < 1:
            raise ValueError("alert webhook attempts and queue_size must be at least 1")
        self.webhook_url = webhook_url
        self.server = server or socket.gethostname()
        self.timeout = timeout
        self.deadline = deadline
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.queue_size = queue_size
        self._rand = rand
        #: Counters for /metrics and tests: delivered, given up, dropped from a full queue, failed attempts.
        self.sent = self.failed = self.dropped = self.attempt_failures = 0
        # Without a proxy handler from the environment a loopback test never leaves loopback;
        # with one, production webhooks still go through the operator's proxy.
        self._connections: list[http.client.HTTPConnection] = []  # the current attempt's, for the deadline
        self._opener = urllib.request.build_opener(_NoRedirect(), _TrackedHTTP(self._connections),
                                                   _TrackedHTTPS(self._connections))
        self._pid: int | None = None
        self._reset()

    def _reset(self) -> None:
        # Threads do not survive a fork: a worker forked from a process that already sent
        # builds its own queue and thread on first use.
        self._cond = threading.Condition()
        self._queue: deque[bytes] = deque()
        self._busy = False
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def stats(self) -> dict[str, int]:
        """Return the delivery counters."""
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                "attempt_failures": self.attempt_failures, "queued": len(self._queue)}

    def send(self, notification: Notification) -> None:
        """Log ``notification`` and queue it for the webhook; never raises, never blocks on the network."""
        try:
            self._log(notification)
            if self.webhook_url is not None:
                self._enqueue(json.dumps(notification.payload(self.server), default=str).encode())
        except Exception:  # a notification must never break the caller
            log.exception("alert notification failed", extra={"rule": notification.rule})

    __call__ = send

    def _log(self, n: Notification) -> None:
        log.log(LEVELS.get(n.status, logging.WARNING), "alert %s: %s version %s: %s (value %s, threshold %s)",
                n.status, n.model, n.version, n.rule, n.value, n.threshold,
                extra={"alert_status": n.status, "model": n.model, "version": n.version, "rule": n.rule,
                       "description": n.description, "value": n.value, "threshold": n.threshold, "since": n.since})

    def _enqueue(self, body: bytes) -> None:
        if self._pid != os.getpid():
            self._reset()
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
                log.warning("alert webhook queue full; dropped the oldest notification",
                            extra={"dropped_total": self.dropped})
            self._queue.append(body)
            if self._thread is None or not self._thread.is_alive():
                self._closing.clear()
                self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
                self._thread.start()
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued notification was delivered or given up; return whether it happened."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout``, then stop the thread (abandoning back-off waits)."""
        self.flush(timeout)
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    self._cond.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(body)
            except Exception:  # the thread must outlive any surprise
                self.failed += 1
                log.exception("alert webhook delivery crashed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, body: bytes) -> bool:
        reason = ""
        for attempt in range(self.attempts):
            if attempt and self._closing.wait(backoff_delay(attempt - 1, self.base_delay, self.max_delay, self._rand)):
                reason = f"closing after {attempt} attempts; last: {reason}"
                break
            retry, reason = self._post(body)
            if not reason:
                self.sent += 1
                return True
            self.attempt_failures += 1
            log.info("alert webhook attempt failed", extra={"attempt": attempt + 1, "reason": reason})
            if not retry:
                break
        self.failed += 1
        log.error("alert webhook delivery failed; giving up", extra={"reason": reason, "failed_total": self.failed})
        return False

    def _post(self, body: bytes) -> tuple[bool, str]:
        """POST once; return (worth retrying, failure reason or "" on success)."""
        request = urllib.request.Request(self.webhook_url or "", data=body, method="POST",  # noqa: S310  Config allows only http(s)
                                         headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
        watchdog = threading.Timer(self.deadline, self._abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
            return False, ""
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                return False, f"HTTP {exc.code}: redirects are not followed (to {exc.headers.get('Location', '?')!r})"
            return exc.code >= 500 or exc.code in RETRY_STATUSES, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # refused, DNS, timeout, TLS, bad URL, or closed at the deadline
            if not watchdog.is_alive():
                return True, f"no answer within the {self.deadline:g} s deadline"
            return True, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        finally:
            watchdog.cancel()
            self._connections.clear()

    def _abort(self) -> None:
        """The attempt's deadline passed: close its connection, which ends any read blocked on it."""
        for connection in list(self._connections):
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib then raises the 3xx as an ``HTTPError``."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _TrackedHTTP(urllib.request.HTTPHandler):
    """Open connections as usual, remembering each so the deadline can close it."""

    def __init__(self, opened: list[http.client.HTTPConnection]):
        super().__init__()
        self._opened = opened

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_remembered(http.client.HTTPConnection, self._opened), req)


class _TrackedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, opened: list[http.client.HTTPConnection]):
        super().__init__()
        self._opened = opened

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_remembered(http.client.HTTPSConnection, self._opened), req, context=self._context)


def _remembered(kind: type[http.client.HTTPConnection], opened: list[http.client.HTTPConnection]) -> Callable[..., Any]:
    def connect(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        connection = kind(*args, **kwargs)
        opened.append(connection)
        return connection

    return connect
