"""The dispatcher's HTTP client against endpoints that answer badly: what it makes of each."""

from __future__ import annotations

import asyncio

import pytest

from interfaces.endpoint import MAX_CHUNKS, Endpoint, EndpointError


def exchange(answer: bytes, *, posts: int = 1, close_after: bool = False):
    """POST `posts` times to a local server that reads each request and writes `answer`."""

    async def run():
        async def handle(reader, writer):
            for _ in range(posts):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
                if close_after:
                    writer.close()
                    return

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        endpoint = Endpoint(f"http://127.0.0.1:{port}/hook", timeout_s=2)
        try:
            return [
                await endpoint.post(b"{}", {"content-type": "application/json"})
                for _ in range(posts)
            ]
        finally:
            endpoint.close()
            server.close()

    return asyncio.run(run())


def test_a_2xx_is_taken_whatever_its_body():
    huge = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"%x\r\n" % (3 << 20)
    assert exchange(huge + b"x" * 100) == [(200, None)]  # a 3 MiB chunk is not read
    lying = b"HTTP/1.1 204 No Content\r\ncontent-length: nope\r\n\r\n"
    assert exchange(lying) == [(204, None)]


def test_a_head_over_64_kib_is_an_error_not_a_crash():
    with pytest.raises(EndpointError, match="LimitOverrunError"):
        exchange(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (70 * 1024) + b"\r\n\r\n")


def test_status_and_retry_after_are_read_and_a_kept_alive_connection_is_reused():
    answer = b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ncontent-length: 2\r\n\r\nno"
    assert exchange(answer, posts=3) == [(503, "7")] * 3


def test_an_endpoint_that_closes_after_each_answer_is_posted_again_on_a_new_connection():
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    async def run():
        served = []

        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(
                int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            )
            served.append(1)
            writer.write(answer)
            await writer.drain()
            writer.close()  # no keep-alive, and no "connection: close" said

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        endpoint = Endpoint(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", 2)
        try:
            got = [await endpoint.post(b"{}", {}) for _ in range(3)]
        finally:
            endpoint.close()
            server.close()
        return got, len(served)

    got, served = asyncio.run(run())
    assert got == [(200, None)] * 3
    assert served == 3


def test_nothing_listening_is_an_error_naming_it():
    async def run():
        endpoint = Endpoint("http://127.0.0.1:9/", timeout_s=2)
        return await endpoint.post(b"{}", {})

    with pytest.raises(EndpointError, match="could not deliver"):
        asyncio.run(run())


def test_informational_answers_are_skipped_for_the_final_one():
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    assert exchange(b"HTTP/1.1 100 Continue\r\n\r\n" + early + final, posts=2) == [(200, None)] * 2


def test_a_chunked_answers_trailer_is_read_and_the_connection_kept():
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"
    assert exchange(answer, posts=2) == [(200, None)] * 2


@pytest.mark.parametrize("status", [b"+200", b"2_0", b"20", b"\xb2\xb2\xb2"])
def test_a_status_that_is_not_three_digits_is_an_error(status):
    with pytest.raises(EndpointError, match="ValueError"):
        exchange(b"HTTP/1.1 " + status + b" OK\r\ncontent-length: 0\r\n\r\n")


def _posts_to(respond, posts: int):
    """POST `posts` times to a local server whose `respond(n)` gives the bytes written for its
    n-th request (over every connection); (answers, connections opened)."""

    async def run():
        seen, connections = [0], [0]

        async def handle(reader, writer):
            connections[0] += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    writer.write(respond(seen[0]))
                    seen[0] += 1
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        endpoint = Endpoint(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", 2)
        try:
            got = []
            for _ in range(posts):
                got.append(await endpoint.post(b"{}", {}))
                await asyncio.sleep(0.05)  # as between two changes: a late extra answer lands
            return got, connections[0]
        finally:
            endpoint.close()
            server.close()

    return asyncio.run(run())


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
REFUSED = b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n"


def test_an_answer_given_twice_is_not_taken_for_the_next_posts():
    """An endpoint that answers one POST twice leaves a spare 200 in the connection: taken as
    the next POST's answer, a refusal would pass for a 2xx and its change never be sent again."""
    got, connections = _posts_to(lambda n: OK + OK if n == 0 else REFUSED if n == 1 else OK, 3)
    assert got == [(200, None), (500, None), (200, None)]
    assert connections == 2  # the connection holding the spare answer was given up


@pytest.mark.parametrize("size", [b"-1", b"+1", b"0x1", b"1_0", b" ", b"123456789"])
def test_a_chunk_size_that_is_not_hex_digits_ends_the_body_and_the_connection(size):
    """int(x, 16) takes "-1": a -1 chunk then read one byte at a time, past any bound."""
    flood = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + (size + b"\r\nX") * 1000
    got, connections = _posts_to(lambda n: flood if n == 0 else OK, 2)
    assert got == [(200, None), (200, None)]
    assert connections == 2


def _chunked(chunks: int, size: int = 1) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % size + b"X" * size + b"\r\n") * chunks
        + b"0\r\n\r\n"
    )


def test_a_flood_of_tiny_chunks_is_bounded_by_its_count():
    """400,000 one-byte chunks (400 KB of body, 2.4 MB sent): the status is kept, the rest is
    not read, and the connection is given up, after MAX_CHUNKS of them (each costs the loop
    every subscription shares two reads: read up to MAX_BODY, they took about a second)."""
    got, connections = _posts_to(lambda n: _chunked(400_000) if n == 0 else OK, 2)
    assert got == [(200, None), (200, None)]
    assert connections == 2


def test_a_chunked_answer_within_its_bounds_keeps_its_connection():
    got, connections = _posts_to(lambda n: _chunked(MAX_CHUNKS) if n == 0 else OK, 2)
    assert got == [(200, None), (200, None)]
    assert connections == 1
    got, connections = _posts_to(lambda n: _chunked(MAX_CHUNKS + 1) if n == 0 else OK, 2)
    assert connections == 2


def test_big_chunks_are_bounded_by_their_size_as_sent():
    got, connections = _posts_to(lambda n: _chunked(20, 64 * 1024) if n == 0 else OK, 2)
    assert got == [(200, None), (200, None)]
    assert connections == 2  # 1.3 MB: over MAX_BODY, the rest not read


def test_every_https_endpoint_shares_one_tls_context(monkeypatch):
    import ssl

    from interfaces import endpoint as module

    built = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda: built.append(1) or real())
    module._tls.cache_clear()

    async def run():
        for _ in range(3):
            with pytest.raises(EndpointError):
                await Endpoint("https://127.0.0.1:9/", timeout_s=2).post(b"{}", {})

    asyncio.run(run())
    module._tls.cache_clear()
    assert built == [1]
