"""The load generator's HTTP client and statistics, against a tiny local server (no stack)."""

import asyncio

import pytest

from exchange.bench.load import Driver, HttpClient, Op, Recorder, percentile, stats_ms


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    stats = stats_ms([0.001, 0.002, 0.003])
    assert stats.n == 3 and stats.max == pytest.approx(3.0)


async def _serve(responses: list[bytes], seen: list[bytes]):
    """A server answering each connection's requests with the next canned responses."""
    queue = list(responses)

    async def handle(reader, writer):
        while queue:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            seen.append(head + body)
            response = queue.pop(0)
            writer.write(response)
            await writer.drain()
            if b"Connection: close" in response:
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_client_reads_length_chunked_and_reuses_kept_alive_connections():
    responses = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b'HTTP/1.1 409 Conflict\r\nContent-Length: 37\r\nConnection: close\r\n\r\n{"error":{"code":"order_not_cancel"}}',
    ]
    seen: list[bytes] = []

    async def main():
        server = await _serve(responses, seen)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient("127.0.0.1", port)
        first = await client.request(client.get("/a"))
        assert len(client.idle) == 1  # kept alive
        second = await client.request(client.send_json("POST", "/b", '{"x":1}', "Authorization: Bearer t\r\n"))
        third = await client.request(client.get("/c"))
        assert client.idle == []  # closed as the server said
        server.close()
        return first, second, third

    first, second, third = asyncio.run(main())
    assert first == (200, b"ok")
    assert second == (201, b"abcde")
    assert third[0] == 409
    assert seen[1].endswith(b'{"x":1}') and b"Authorization: Bearer t" in seen[1]


def test_open_loop_sends_at_the_rate_and_records_error_codes():
    body = b'{"error":{"code":"throttled"}}'
    response = b"HTTP/1.1 429 Too Many\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    seen: list[bytes] = []

    async def main():
        server = await _serve([response] * 1000, seen)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient("127.0.0.1", port)
        rec = Recorder()
        op = Op("GET /x", client.get("/x"))
        await Driver(client).open_loop(lambda: op, rate=200, duration=1.0, rec=rec)
        server.close()
        return rec

    rec = asyncio.run(main())
    assert 190 <= rec.count("GET /x") <= 201
    assert rec.answers[("GET /x", 429, "throttled")] == rec.count("GET /x")
    assert rec.server_errors() == 0 and rec.failures() == 0
