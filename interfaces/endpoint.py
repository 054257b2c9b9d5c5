"""One subscriber endpoint over HTTP/1.1: a kept-alive connection (TLS for https), one POST at a
time, the answer's status and Retry-After read and its body read and dropped.

Written on asyncio streams rather than an HTTP library because the dispatcher sends one POST per
change per subscription (3,000 a second for 10 subscriptions at DRx's 300 deliveries a second)
on the same cores as the webhook. Measured (a backlog drained to a local endpoint): about 90 us
of the dispatcher process's CPU per POST, signing and bookkeeping included. The first dispatcher
(httpx, a thread per subscription) fell 14 s behind at 300 deliveries/s with two subscriptions.
Only what a webhook POST needs: no redirects (a 3xx is a failure), no proxies, no compression.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
# An answer's body is read and dropped, up to this much as sent (a chunked body's size lines
# and their ends included, so that a flood of tiny chunks is bounded too).
MAX_BODY = 1024 * 1024
MAX_TRAILERS = 100  # trailer fields after a chunked body, read and dropped
# A chunked answer in more chunks is given up (its connection closed, its status kept): each
# chunk costs the loop two reads, so a flood of one-byte chunks up to MAX_BODY took about a
# second of the loop that every subscription shares, at each POST.
MAX_CHUNKS = 1000
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")  # int(x, 16) alone takes "-1", "0x10", "1_0"


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every endpoint: building one loads the system's CA bundle (about
    19 ms of the dispatcher's loop), which an endpoint that closes each connection would
    otherwise cost every other subscription on each POST."""
    return ssl.create_default_context()


def _buffered(reader: asyncio.StreamReader) -> bool:
    """Bytes already waiting, or the end of the stream, on a connection between two POSTs."""
    return reader.at_eof() or bool(getattr(reader, "_buffer", b""))


class EndpointError(Exception):
    """No usable answer: the message is the short reason kept in the attempts log."""


class Endpoint:
    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.authority = parts.netloc.rsplit("@", 1)[-1]
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        """(status, Retry-After) of one POST; EndpointError when no answer came in time or the
        connection failed. A kept-alive connection the endpoint had closed is opened again
        once (the POST may then arrive twice: at least once, with the same webhook-id)."""
        reused = self._writer is not None
        try:
            async with asyncio.timeout(self.timeout_s):  # no task per POST, as wait_for makes
                return await self._exchange(body, headers)
        except TimeoutError:
            self.close()
            raise EndpointError("no answer in time") from None
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,  # a head over 64 KiB
            ValueError,
            IndexError,
        ) as exc:
            self.close()
            if reused and isinstance(exc, ConnectionError | asyncio.IncompleteReadError):
                return await self.post(body, headers)
            raise EndpointError(f"could not deliver ({type(exc).__name__})") from None

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        if self._reader is not None and _buffered(self._reader):
            # Bytes before our request is even sent are no answer to it (an endpoint that
            # answered the last POST twice): taken as this one's, a refusal would be read as
            # the 200 before it, and its change never sent again. Start on a fresh connection.
            self.close()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=_tls() if self.tls else None, limit=MAX_HEAD
            )
        assert self._reader is not None
        lines = [f"POST {self.target} HTTP/1.1", f"host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"content-length: {len(body)}", "", ""]
        self._writer.write("\r\n".join(lines).encode() + body)
        await self._writer.drain()
        while True:  # an informational answer (100 Continue, 103 Early Hints) comes first
            head = await self._reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = _status(status_line)
            if not 100 <= status < 200 or status == 101:  # 101: no upgrade was asked for
                break
        found: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            if name:
                found[name.strip().lower()] = value.strip()
        try:
            await self._drop_body(found)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()  # the answer's status came: a body we cannot read changes nothing
        if found.get("connection", "").lower() == "close" or (
            self._reader is not None and _buffered(self._reader)
        ):
            self.close()  # more than one answer came: the connection is not to be trusted
        return status, found.get("retry-after")

    async def _drop_body(self, headers: dict[str, str]) -> None:
        assert self._reader is not None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            read = 0
            for _ in range(MAX_CHUNKS + 1):
                line = await self._reader.readline()
                digits = line.split(b";")[0].strip()
                if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(digits):
                    raise ValueError("not a chunk's size")  # the end of the stream too
                size = int(digits, 16)
                if size == 0:  # then trailer fields, if any, and an empty line
                    for _ in range(MAX_TRAILERS + 1):
                        if (await self._reader.readline()).strip() == b"":
                            return
                    raise ValueError("answer's trailer too long")
                read += len(line) + size + 2
                if read > MAX_BODY:  # before reading it: a chunk's size is the endpoint's word
                    raise ValueError("answer too long")
                await self._reader.readexactly(size + 2)
            raise ValueError("answer in too many chunks")
        if "content-length" not in headers:  # the body runs to the connection's end
            self.close()
            return
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise ValueError("answer too long")
        await self._reader.readexactly(length)

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None


def _status(line: str) -> int:
    """The status code of `HTTP/1.1 200 OK`: three ASCII digits (int() would take "+200")."""
    code = line.split(" ", 2)[1]
    if len(code) != 3 or not (code.isascii() and code.isdigit()):
        raise ValueError("not a status code")
    return int(code)
