"""Where a request ends in the bytes received so far: complete exactly when its last byte is in, however the
bytes are split; refusable (handed on at once) when it is malformed or over a limit."""

from __future__ import annotations

import pytest

from cds.web.framing import READ_AHEAD, REFUSABLE, WAITING, WHOLE, RequestFraming

HEAD = b"POST /cds-services/x HTTP/1.1\r\nHost: cds\r\nContent-Type: application/json\r\n"
BODY = b'{"hook": "order-sign", "context": {"draftOrders": {}}}'


def states(request: bytes, max_body: int = 1 << 20) -> list:
    """The state after each byte, fed one at a time."""
    framing = RequestFraming(max_head=65536, max_body=max_body)
    return [framing.feed(request[:end]) for end in range(1, len(request) + 1)]


def chunked(body: bytes, size: int, trailers: bytes = b"") -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: cds\r\n\r\n",
    HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY,
    HEAD + b"content-length:%d\r\n\r\n" % len(BODY) + BODY,
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY, 7),
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY, 1000, b"X-Checksum: 1\r\n"),
], ids=["no-body", "content-length", "lower-case", "chunked", "chunked-with-trailers"])
def test_a_request_is_complete_exactly_at_its_last_byte(request_bytes):
    seen = states(request_bytes)
    assert seen[-1] == WHOLE
    assert all(not state.complete for state in seen[:-1])


def test_bytes_after_the_request_do_not_change_where_it_ends():
    request = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    assert RequestFraming(65536, 1 << 20).feed(request + b"GET / HTTP/1.1\r\n") == WHOLE


@pytest.mark.parametrize("request_bytes", [
    HEAD + b"Content-Length: 2000000\r\n\r\n",
    HEAD + b"Content-Length: 1, 2\r\n\r\n",
    HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n",
    HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"fffff\r\n" + b" " * (1024 + READ_AHEAD + 1),
    b"GET /" + b"a" * 70000,
], ids=["over-the-body-limit", "bad-length", "repeated-length", "unknown-coding", "both-framings", "bad-size",
        "chunk-over-the-body-limit", "head-over-its-limit"])
def test_malformed_or_oversized_requests_are_handed_on_to_be_refused(request_bytes):
    assert RequestFraming(max_head=65536, max_body=1024).feed(request_bytes) == REFUSABLE


def test_a_chunked_body_is_handed_on_only_once_what_the_reader_needs_to_refuse_it_is_in():
    """The app reads a byte past the limit, the server's reader a piece of up to 1 KiB more: both must be in."""
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\nfffff\r\n"
    assert RequestFraming(65536, 1024).feed(head + b" " * (1024 + READ_AHEAD)) == WAITING
    assert RequestFraming(65536, 1024).feed(head + b" " * (1024 + READ_AHEAD + 1)) == REFUSABLE


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"chunked"])
def test_a_body_is_framed_by_its_last_transfer_coding(coding):
    request = HEAD + b"Transfer-Encoding: " + coding + b"\r\n\r\n" + chunked(BODY, 10)
    assert states(request)[-1] == WHOLE
    assert not any(state.complete for state in states(request)[:-1])


def test_a_client_expecting_100_continue_is_seen_as_waiting_for_it():
    state = RequestFraming(65536, 1024).feed(HEAD + b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    assert not state.complete and state.expects_continue
    assert RequestFraming(65536, 1024).feed(HEAD + b"Content-Length: 10\r\n\r\n") == WAITING
