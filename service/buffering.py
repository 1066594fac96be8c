"""A Gunicorn worker that reads every request whole before a thread serves it.

Gunicorn's ``sync`` and ``gthread`` workers read a request's headers and body in the process (or
thread) that then runs the app, so a client sending one byte a second holds that process or
thread for as long as it likes: two such clients stall two sync workers. Nginx and Apache avoid it
by buffering each request before they pass it on. :class:`BufferingWorker` does the same inside
the worker: its main loop reads every connection without blocking into a buffer, bounded by
Gunicorn's request limits, ``MAX_REQUEST_BYTES`` and a read deadline, and only a complete request
reaches the thread pool. The threads never wait on a client: what they read is already here.

This module frames requests (where the head ends, how long the body is); it does not judge them.
Gunicorn's own parser still reads every request, from the buffer, and refuses what is malformed.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections import deque
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

#: Bytes read from a client at a time by the main loop.
RECV_BYTES = 256 * 1024
#: Bytes read from one client per wake of the main loop at most. The loop takes the GIL back only
#: every switch interval (5 ms) while a thread predicts, so reading little per wake would make
#: a large body wait seconds in the kernel's buffer, then past its read deadline, under load.
READ_PER_WAKE = 4 * 1024 * 1024
#: Longest chunk-size line of a chunked body (hex size and extensions) before it is handed to the parser.
CHUNK_LINE_LIMIT = 4096
#: Seconds a thread may wait on a client after the hand-over (the body of a refused request
#: being drained, for example); Gunicorn bounds its own drain the same way.
THREAD_READ_SECONDS = gthread.DEFAULT_WORKER_DATA_TIMEOUT
#: Seconds between two sweeps for requests past their read deadline.
SWEEP_SECONDS = 0.5
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Framing:
    """The bytes of one HTTP/1 request as they arrive; says when the request is whole.

    ``feed`` returns True once the buffer holds the whole request, and also as soon as it holds
    something Gunicorn's parser will refuse or the app will answer without reading on (a head
    past the limits, a bad length, a body over ``max_body``): waiting would gain nothing.
    """

    def __init__(self, max_head: int, max_body: int) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.data = bytearray()
        self.head_end: int | None = None  # index just past the blank line ending the head
        self.body_end: int | None = None  # a Content-Length body: index just past it
        self.chunk_at: int | None = None  # a chunked body: where the next chunk-size line starts
        self.expects_continue = False
        self.ready = False

    def feed(self, piece: bytes) -> bool:
        """Add bytes read from the client; return whether the request can go to a thread."""
        self.data += piece
        if not self.ready:
            self.ready = self._whole()
        return self.ready

    def _whole(self) -> bool:
        if self.head_end is None and (verdict := self._read_head()) is not None:
            return verdict
        if self.body_end is not None:
            return len(self.data) >= self.body_end
        if self.chunk_at is not None:
            return self._read_chunks()
        return True  # no body

    def _read_head(self) -> bool | None:
        """Find the head's end and the body's framing: None once read, False until it has arrived,
        True when it is unusable (the parser will say why) and there is nothing to wait for."""
        start = 2 if self.data[:2] == b"\r\n" else 0  # one empty line may precede the request line
        end = self.data.find(b"\r\n\r\n", start)
        if end < 0:
            head = self.data[start:]
            return len(head) > self.max_head or head.count(b"\n") != head.count(b"\r\n")
        lines = bytes(self.data[start:end]).split(b"\r\n")
        if end - start > self.max_head or b"\n" in b"".join(lines):
            return True
        self.head_end = end + 4
        version = lines[0].rsplit(b" ", 1)[-1]
        lengths, codings = [], []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings.append(value)
            elif name == b"expect" and value == b"100-continue" and version == b"HTTP/1.1":
                self.expects_continue = True
        if codings:
            if lengths or codings != [b"chunked"]:
                return True  # the parser refuses (or cannot frame) this body
            self.chunk_at = self.head_end
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit() or int(lengths[0]) > self.max_body:
                return True  # refused by the parser, or answered 413 by the app
            self.body_end = self.head_end + int(lengths[0])
        return None

    def _read_chunks(self) -> bool:
        """Walk the chunks that have arrived; True at the last chunk's end (trailers included)."""
        at, body_start = self.chunk_at or 0, self.head_end or 0
        while True:
            if at - body_start > self.max_body:
                return True  # over the limit: the app answers 413
            eol = self.data.find(b"\r\n", at)
            if eol < 0:
                return len(self.data) - at > CHUNK_LINE_LIMIT
            if eol - at > CHUNK_LINE_LIMIT:
                return True
            try:
                size = int(bytes(self.data[at:eol]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                return True  # the parser refuses it
            if size == 0:
                if self.data[eol + 2:eol + 4] == b"\r\n":
                    return True
                return self.data.find(b"\r\n\r\n", eol) >= 0 or len(self.data) - eol > self.max_head
            following = eol + 2 + size + 2
            if following > len(self.data):
                return False
            at = self.chunk_at = following

    def take(self) -> bytes:
        """Every byte received (the request, and whatever the client pipelined after it)."""
        data, self.data = bytes(self.data), bytearray()
        return data


class DeadlineUnreader(SocketUnreader):
    """Gunicorn's socket reader, giving up on a client silent past ``deadline`` (time.monotonic())."""

    deadline = 0.0

    def chunk(self, size_hint: int | None = None) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("client too slow after its request was handed to a thread")
        self.sock.settimeout(remaining)
        try:
            return super().chunk(size_hint)
        finally:
            self.sock.settimeout(None)  # writing the answer is not bounded by this deadline


class BufferingWorker(gthread.ThreadWorker):
    """Gunicorn's gthread worker with the reading moved into its main loop, ahead of the threads.

    A request goes to the thread pool only when it is whole; with one thread (``THREADS=1``, the
    default) the main loop serves it itself, between reads, as a sync worker would. A client that takes longer than
    ``read_timeout`` seconds for one request (from its first byte, or from accept) is closed.
    Reading stops for a while when the requests held exceed ``buffer_budget`` bytes in all.
    TLS, HTTP/2 and the PROXY protocol, none of which our configuration enables, are left to
    the plain gthread path.
    """

    max_body = 16 * 1024 * 1024
    read_timeout = 20.0
    buffer_budget = 64 * 1024 * 1024

    @classmethod
    def limited(cls, max_body: int, read_timeout: float) -> type[BufferingWorker]:
        """Return this worker class with the app's request limits (gunicorn.conf.py sets ``worker_class`` to it)."""
        return type(cls.__name__, (cls,), {"__module__": cls.__module__, "max_body": max_body,
                                           "read_timeout": float(read_timeout),
                                           "buffer_budget": max(cls.buffer_budget, 4 * max_body)})

    def init_process(self) -> None:
        cfg = self.cfg
        self.buffers_requests = not (cfg.is_ssl or cfg.proxy_protocol != "off"
                                     or getattr(cfg, "http2_cleartext", "off") not in (None, "off"))
        fields = cfg.limit_request_fields or 100
        self.max_head = (cfg.limit_request_line or 1024 * 1024) + 4 + fields * ((cfg.limit_request_field_size or 8190) + 2) + 4
        self.reading: set[Any] = set()  # connections whose request is still arriving
        self.paused: list[Any] = []  # of those, the ones not read while over the buffer budget
        self.buffered = 0
        self.next_sweep = 0.0
        # One thread (THREADS=1): the main loop runs each whole request itself. Handing it to a
        # pool of one thread and back through a pipe cost two thread switches and a wake of the
        # loop per request and gained nothing: with one thread, one request runs at a time anyway.
        self.inline = self.buffers_requests and cfg.threads == 1
        self.whole: deque[Any] = deque()  # whole requests the main loop serves next (inline)
        self.serving = False
        super().init_process()

    # -- into the buffer ---------------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        if not self.buffers_requests:
            return super().accept(listener)
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._read_request(gthread.TConn(self.cfg, client, address, listener.getsockname()), b"")

    def on_client_socket_readable(self, conn: Any, client: socket.socket) -> None:
        """A kept-alive connection has the next request coming: buffer it too."""
        if not self.buffers_requests:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn, b"")
        self._on_readable(conn, client)

    def _read_request(self, conn: Any, received: bytes) -> None:
        """Start buffering a request on ``conn``, from what was already ``received`` of it."""
        conn.framing = Framing(self.max_head, self.max_body)
        conn.read_deadline = time.monotonic() + self.read_timeout
        conn.continued = False
        conn.sock.setblocking(False)
        if received:
            self.buffered += len(received)
        self.reading.add(conn)
        if received and conn.framing.feed(received):
            self._hand_over(conn, registered=False)
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: Any, _client: socket.socket) -> None:
        if self.buffered >= self.buffer_budget:
            self.poller.unregister(conn.sock)  # read on once the held requests have gone to threads
            self.paused.append(conn)
            return
        read = 0
        while True:
            try:
                piece = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(conn)
                return
            if not piece:
                self._drop(conn)  # the client went away before its request was whole
                return
            self.buffered += len(piece)
            read += len(piece)
            if conn.framing.feed(piece):
                self._hand_over(conn)
                return
            if len(piece) < RECV_BYTES or read >= READ_PER_WAKE or self.buffered >= self.buffer_budget:
                break  # the kernel had no more for now, or this client had its share of the wake
        if conn.framing.expects_continue and not conn.continued and conn.framing.head_end is not None:
            # The client waits for this before it sends the body (curl does for large ones).
            conn.continued = True
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                self._drop(conn)

    # -- out of the buffer -------------------------------------------------------------------
    def _hand_over(self, conn: Any, registered: bool = True) -> None:
        """The request is whole: give it, with its bytes, to the thread pool."""
        if registered:
            self.poller.unregister(conn.sock)
        self._forget(conn)
        data = conn.framing.take()
        conn.sock.setblocking(True)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = DeadlineUnreader(conn.sock)
        conn.parser.unreader.deadline = time.monotonic() + THREAD_READ_SECONDS
        conn.parser.unreader.unread(data)
        conn.data_ready = True  # no waiting for data in the thread: it is here
        self.enqueue_req(conn)

    def enqueue_req(self, conn: Any) -> None:
        """Serve a whole request: in this (the main) thread when ``inline``, else on the pool."""
        if not self.inline:
            return super().enqueue_req(conn)
        self.whole.append(conn)
        if self.serving:
            return  # a request pipelined behind the one being finished: the loop below takes it
        self.serving = True
        started = time.monotonic()
        first = True
        try:
            while self.whole:
                if not first:
                    # A client's pipelined requests are served back to back, outside the loop that
                    # tells the arbiter this worker lives: each one may last up to WORKER_TIMEOUT,
                    # their sum may not, so the heartbeat goes before every request after the first.
                    self.notify()
                first = False
                conn = self.whole.popleft()
                done: Future = Future()
                done.set_result(self.handle(conn))  # handle() answers every Exception itself
                self.finish_request(conn, done)
        finally:
            self.serving = False
            # Nobody read the other clients meanwhile: that time is ours, not theirs to be cut for.
            spent = time.monotonic() - started
            for waiting in self.reading:
                waiting.read_deadline += spent

    def _drop(self, conn: Any) -> None:
        """Close a connection whose request will not be served (gone, or past its deadline)."""
        if conn in self.paused:
            self.paused.remove(conn)
        else:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self._forget(conn)
        self.nr_conns -= 1
        conn.close()

    def _forget(self, conn: Any) -> None:
        self.reading.discard(conn)
        self.buffered -= len(conn.framing.data)
        while self.paused and self.buffered < self.buffer_budget:
            waiting = self.paused.pop(0)
            self.poller.register(waiting.sock, selectors.EVENT_READ, partial(self._on_readable, waiting))

    def finish_request(self, conn: Any, fs: Any) -> None:
        """After the answer: bytes the client pipelined behind the request go back to buffering."""
        if (self.buffers_requests and not fs.cancelled() and fs.exception() is None and fs.result() is True
                and conn.parser.unreader.buf.getvalue()):
            self._read_request(conn, conn.parser.unreader.take_buffered())
            return
        super().finish_request(conn, fs)

    def handle_request(self, req: Any, conn: Any) -> bool:
        if getattr(conn, "continued", False):
            req._expected_100_continue = False  # sent by the main loop already; once is the rule
            conn.continued = False
        return super().handle_request(req, conn)

    def murder_pending(self) -> None:
        """Gunicorn's sweep of idle connections, plus requests past their read deadline."""
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_SECONDS
        cap = None if self.alive else now + gthread.STOP_KEEPALIVE_LINGER
        for conn in list(self.reading):
            if cap is not None:
                conn.read_deadline = min(conn.read_deadline, cap)
            if conn.read_deadline <= now:
                self._drop(conn)
