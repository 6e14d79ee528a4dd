"""Where an HTTP/1.1 request ends in the bytes received so far (RFC 9112 message framing), without parsing
it: the server's worker reads each request whole in its event loop before a thread takes it
(cds.web.serving.RequestReadingWorker), so a client sending slowly holds a socket, never a thread."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEAD_END = b"\r\n\r\n"
# Past the body limit, this much more is read before a chunked body is handed on: the app reads one byte past
# the limit to know it is over, and the server's body reader reads ahead in pieces of up to 1 KiB.
READ_AHEAD = 64 * 1024
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
_FRAMING_FIELD = re.compile(rb"\r\n(content-length|transfer-encoding|expect)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Framing:
    """What the bytes so far say. `complete`: a thread may take the request, because it is all there or
    because the parser or the app will refuse it without the rest (malformed, or over a size limit). `whole`:
    it is all there, so the connection may serve another request after it. `expects_continue`: the client
    waits for a 100 Continue before it sends the body."""

    complete: bool
    whole: bool = False
    expects_continue: bool = False


WAITING = Framing(False)
REFUSABLE = Framing(True)  # malformed, or over a size limit: handed on to be refused
WHOLE = Framing(True, whole=True)


class RequestFraming:
    """Follows one request as its bytes arrive; `feed` is given the whole buffer each time and reads only what
    is new, so a request in many small pieces costs no more than one in a single piece."""

    def __init__(self, max_head: int, max_body: int):
        self.max_head = max_head  # past this without the head's end, the parser refuses it
        self.max_body = max_body
        self._body_start = -1
        self._length = -1  # Content-Length; -1 while unknown or chunked
        self._chunked = False
        self._chunk_at = 0  # the next chunk's size line
        self._received = 0  # body bytes of the chunks walked
        self._expects = False

    def feed(self, buffer: bytes | bytearray) -> Framing:
        if self._body_start < 0:
            head_end = buffer.find(HEAD_END)
            if head_end < 0:
                return REFUSABLE if len(buffer) > self.max_head else WAITING
            self._body_start = self._chunk_at = head_end + len(HEAD_END)
            problem = self._read_head(buffer)
            if problem:
                return problem
        if self._chunked:
            return self._walk_chunks(buffer)
        if len(buffer) - self._body_start >= self._length:
            return WHOLE
        return Framing(False, expects_continue=self._expects)

    def _read_head(self, buffer: bytes | bytearray) -> Framing | None:
        fields: dict[bytes, bytes] = {}
        for match in _FRAMING_FIELD.finditer(buffer, 0, self._body_start):
            name = match[1].lower()
            if name in fields:  # a repeated framing field: the parser refuses the request
                return REFUSABLE
            fields[name] = match[2].strip()
        self._expects = fields.get(b"expect", b"").lower() == b"100-continue"
        if b"transfer-encoding" in fields:
            # Framed by its last coding, which must be chunked (RFC 9112 6.1); the parser refuses the rest.
            if fields[b"transfer-encoding"].lower().rsplit(b",", 1)[-1].strip() != b"chunked" \
                    or b"content-length" in fields:
                return REFUSABLE
            self._chunked = True
            return None
        length = fields.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return REFUSABLE  # malformed, or refused as too large from its Content-Length alone
        self._length = int(length)
        return None

    def _walk_chunks(self, buffer: bytes | bytearray) -> Framing:
        """Size line, data, CRLF, for each chunk; a zero size, trailer fields and an empty line end the body."""
        while True:
            line_end = buffer.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                return REFUSABLE if len(buffer) - self._chunk_at > self.max_head else self._waiting()
            size_text = bytes(buffer[self._chunk_at:line_end]).split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                return REFUSABLE
            size = int(size_text, 16)
            if size == 0:
                if buffer.startswith(b"\r\n", line_end + 2) or buffer.find(HEAD_END, line_end) >= 0:
                    return WHOLE
                return REFUSABLE if len(buffer) - line_end > self.max_head else WAITING
            if line_end + 2 + size + 2 > len(buffer):  # this chunk is still arriving
                if self._received + len(buffer) - line_end - 2 > self.max_body + READ_AHEAD:
                    return REFUSABLE  # the app refuses it as too large from what is here
                return self._waiting()
            self._received += size
            if self._received > self.max_body + READ_AHEAD:
                return REFUSABLE
            self._chunk_at = line_end + 2 + size + 2

    def _waiting(self) -> Framing:
        return Framing(False, expects_continue=self._expects)
