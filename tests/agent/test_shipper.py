"""The shipper against a tiny fake ingest endpoint defined here (an in-process aiohttp server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.shipper import Outcome, Shipper, classify
from agent.wire.batch import Batch, Row, decode_body, encode_msgpack


@dataclass
class FakeCollector:
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)  # answers, then 204
    seen: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # key, auth, ctype, body

    async def ingest(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            (request.headers.get("Idempotency-Key", ""), request.headers.get("Authorization", ""),
             request.headers.get("Content-Type", ""), body)
        )
        if self.script:
            status, headers, payload = self.script.pop(0)
            return web.Response(status=status, headers=headers, body=payload)
        return web.Response(status=204)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeCollector, str]]:
    fc = FakeCollector()
    app = web.Application()
    app.router.add_post("/analytics/ingest", fc.ingest)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fc, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def body() -> bytes:
    return encode_msgpack(Batch(rows=[Row(ts=1_773_569_700, user_id=7, count=3, bytes_received=99)]))


async def test_ack_sends_msgpack_with_token_and_key(fake: tuple[FakeCollector, str]) -> None:
    fc, url = fake
    sh = Shipper(url + "/", "s3cret", request_timeout=5, max_retry_delay=0.01)
    try:
        answer = await sh.deliver("abc:1", body())
    finally:
        await sh.close()
    assert answer.outcome is Outcome.ACK and answer.status == 204
    assert len(fc.seen) == 1
    key, auth, ctype, sent = fc.seen[0]
    assert (key, auth, ctype) == ("abc:1", "Bearer s3cret", "application/msgpack")
    batch = decode_body(sent, ctype)
    assert [(r.ts, r.user_id, r.count, r.bytes_received) for r in batch.rows] == [(1_773_569_700, 7, 3, 99)]


async def test_retries_5xx_408_429_with_same_key_then_acks(fake: tuple[FakeCollector, str]) -> None:
    fc, url = fake
    fc.script = [
        (500, {}, b"boom"),
        (503, {"Retry-After": "1"}, b""),
        (408, {}, b""),
        (429, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, b""),
    ]
    retries = []
    sh = Shipper(url, "t", request_timeout=5, max_retry_delay=0.01, on_retry=retries.append, rand=lambda: 0.0)
    try:
        answer = await sh.deliver("abc:2", body())
    finally:
        await sh.close()
    assert answer.outcome is Outcome.ACK
    assert [s[0] for s in fc.seen] == ["abc:2"] * 5
    assert [(a.status, a.retry_after) for a in retries] == [(500, None), (503, 1.0), (408, None), (429, 0.0)]
    assert retries[0].reason == "boom"


async def test_4xx_is_rejected_with_collector_reason(fake: tuple[FakeCollector, str]) -> None:
    fc, url = fake
    fc.script = [(400, {"Content-Type": "application/json"},
                  b'{"error": {"field": "logs[0].ts", "message": "not a timestamp"}}')]
    sh = Shipper(url, "t", request_timeout=5, max_retry_delay=0.01)
    try:
        answer = await sh.deliver("abc:3", body())
    finally:
        await sh.close()
    assert (answer.outcome, answer.status, answer.reason) == (Outcome.REJECT, 400, "logs[0].ts: not a timestamp")
    assert len(fc.seen) == 1


async def test_connection_refused_retries_until_deadline() -> None:
    import socket
    import time

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retries = []
    sh = Shipper(f"http://127.0.0.1:{port}", "t", request_timeout=2, max_retry_delay=0.01,
                 on_retry=retries.append, rand=lambda: 1.0)
    try:
        answer = await sh.deliver("k:1", body(), deadline=time.monotonic() + 0.2)
    finally:
        await sh.close()
    assert answer.outcome is Outcome.RETRY and answer.status == 0
    assert len(retries) >= 1 and all(a.status == 0 for a in retries)


@pytest.mark.parametrize(
    "status,outcome",
    [(200, Outcome.ACK), (204, Outcome.ACK), (400, Outcome.REJECT), (401, Outcome.REJECT), (403, Outcome.REJECT),
     (413, Outcome.REJECT), (404, Outcome.REJECT), (408, Outcome.RETRY), (429, Outcome.RETRY),
     (500, Outcome.RETRY), (502, Outcome.RETRY), (503, Outcome.RETRY)],
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status, b"", None, 0.0).outcome is outcome


async def test_waits_follow_full_jitter_backoff_and_retry_after(fake: tuple[FakeCollector, str]) -> None:
    """The delays deliver() really waits, seen through its sleep: the collector's
    Retry-After (seconds or an HTTP date) wins, capped at max_retry_delay; without one
    the wait is rand * min(cap, 0.5 * 2**attempt)."""
    import time

    from agent import backoff

    fc, url = fake
    in_20s = backoff.http_date(time.time() + 20)  # whole seconds: 19 < wait <= 20
    fc.script = [
        (503, {}, b""),  # attempt 0: 0.25 * 0.5
        (500, {}, b""),  # attempt 1: 0.25 * 1.0
        (503, {"Retry-After": "7"}, b""),  # honoured as sent
        (429, {"Retry-After": "3600"}, b""),  # capped at 30
        (503, {"Retry-After": in_20s}, b""),
        (502, {}, b""),  # attempt 5: 0.25 * min(30, 16)
        (503, {"Retry-After": "soon"}, b""),  # unreadable: the backoff decides (attempt 6: 0.25 * 30)
    ]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    sh = Shipper(url, "t", request_timeout=5, max_retry_delay=30, rand=lambda: 0.25, sleep=sleep)
    try:
        answer = await sh.deliver("abc:9", body())
    finally:
        await sh.close()
    assert answer.outcome is Outcome.ACK
    assert [s[0] for s in fc.seen] == ["abc:9"] * 8  # one key for every attempt
    assert waits[:4] == [0.125, 0.25, 7.0, 30.0]
    assert 19.0 < waits[4] <= 20.0
    assert waits[5:] == [4.0, 7.5]
