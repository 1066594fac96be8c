"""service.buffering.Framing: when a request has arrived whole, fed the way a slow client sends it."""

from __future__ import annotations

import pytest

from service.buffering import Framing

MAX_HEAD = 8 * 1024
MAX_BODY = 1000
POST = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def fed(*pieces: bytes) -> list[bool]:
    """What ``feed`` answered after each piece."""
    framing = Framing(MAX_HEAD, MAX_BODY)
    return [framing.feed(piece) for piece in pieces]


def test_a_request_without_body_is_whole_at_the_blank_line_and_not_before():
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    assert fed(*(request[i:i + 1] for i in range(len(request)))) == [False] * (len(request) - 1) + [True]


def test_a_length_body_is_whole_at_its_last_byte():
    assert fed(POST + b"Content-Length: 5\r\n\r\n", b"{}", b"  ", b"\n") == [False, False, False, True]


def test_a_chunked_body_is_whole_after_the_last_chunk_and_trailers():
    head = POST + b"Transfer-Encoding: chunked\r\n\r\n"
    assert fed(head, b"2\r\n{}", b"\r\n", b"0\r\n", b"\r\n") == [False, False, False, False, True]
    assert fed(head + b"1;ext=1\r\n{\r\n1\r\n}\r\n0\r\nX-Trailer: 1\r\n", b"\r\n") == [False, True]


def test_a_pipelined_request_stays_in_the_buffer_for_the_next_one():
    framing = Framing(MAX_HEAD, MAX_BODY)
    assert framing.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n")
    assert framing.take() == b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n" and framing.data == b""


def test_expect_100_continue_is_noticed_on_http_1_1_only():
    framing = Framing(MAX_HEAD, MAX_BODY)
    assert not framing.feed(POST + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert framing.expects_continue
    old = Framing(MAX_HEAD, MAX_BODY)
    old.feed(POST.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert not old.expects_continue


@pytest.mark.parametrize("head", [
    POST + b"Content-Length: 1001\r\n\r\n",                                  # over MAX_REQUEST_BYTES: the app's 413
    POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n",                # two lengths: the parser's 400
    POST + b"Content-Length: -1\r\n\r\n",
    POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",       # both framings: smuggling
    POST + b"Transfer-Encoding: gzip\r\n\r\n",
    POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",                      # not a chunk size
    b"GET / HTTP/1.1\nHost: x\n",                                            # bare LF: the parser refuses it
    b"GET /" + b"a" * (MAX_HEAD + 1),                                        # a head past every limit
], ids=["too-long", "two-lengths", "negative", "te-and-cl", "gzip", "bad-chunk", "bare-lf", "huge-head"])
def test_what_the_parser_or_app_refuses_goes_on_at_once(head):
    """Waiting for more of these gains nothing, and would let a client hold the connection."""
    assert fed(head) == [True]


def test_a_chunked_body_over_the_limit_goes_on_without_waiting_for_its_end():
    chunk = b"%x\r\n" % 600 + b" " * 600 + b"\r\n"
    assert fed(POST + b"Transfer-Encoding: chunked\r\n\r\n", chunk, chunk) == [False, False, True]
