"""POST spooled batches to the collector; classify each answer; retry with backoff.

One attempt (`send`) maps the collector's answer to an Outcome:
    204 / 2xx                          -> ACK
    5xx, 408, 429, connection errors,
    timeouts                           -> RETRY (with the Retry-After it sent, if any)
    any other 4xx (400, 401, 403, 413) -> REJECT (with the collector's reason); the batch
                                          is set aside in spool/dead-letter, and
                                          `proxymeter-agent redeliver` resends it once
                                          the cause (a wrong token, say) is fixed
`deliver` repeats `send` until ACK or REJECT, sleeping per agent.backoff between
attempts; it never gives up on a retriable error unless a deadline is passed (used by
`run --once`, which must end).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

import aiohttp

from agent import backoff
from agent.wire.batch import CONTENT_TYPE_MSGPACK
from agent.wire.logfmt import kv

log = logging.getLogger(__name__)

INGEST_PATH = "/analytics/ingest"
USER_AGENT = "proxymeter-agent"


class Outcome(Enum):
    ACK = "ack"
    RETRY = "retry"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    status: int  # 0 for a connection error or timeout
    reason: str = ""
    retry_after: float | None = None


def classify(status: int, body: bytes, retry_after: str | None, now: float) -> Answer:
    """Pure: the collector's HTTP answer -> what to do with the batch."""
    if 200 <= status < 300:
        return Answer(Outcome.ACK, status)
    reason = _reason(body)
    if status >= 500 or status in (408, 429):
        return Answer(Outcome.RETRY, status, reason, backoff.parse_retry_after(retry_after, now))
    return Answer(Outcome.REJECT, status, reason)


def _reason(body: bytes) -> str:
    """The collector's error text ({"error": {"message": ...}}), else the raw body (bounded)."""
    text = body[:2000].decode("utf-8", "replace").strip()
    try:
        obj = json.loads(body)
    except ValueError:
        return text
    if isinstance(obj, dict) and "error" in obj:
        err = obj["error"]
        if isinstance(err, dict):
            parts = [str(err[k]) for k in ("field", "path", "message") if k in err]
            return ": ".join(parts) if parts else json.dumps(err)
        return str(err)
    return text


class Shipper:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        request_timeout: float,
        max_retry_delay: float,
        on_retry: Callable[[Answer], None] | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`rand` (0 <= x < 1, the jitter draw) and `sleep` (the wait between attempts) are
        parameters so tests can see exactly which delays the backoff chose."""
        self.url = url
        self.token = token
        self.request_timeout = request_timeout
        self.max_retry_delay = max_retry_delay
        self.on_retry = on_retry
        self.rand = rand
        self.sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def configure(self, url: str, token: str, request_timeout: float, max_retry_delay: float) -> None:
        """Applied on SIGHUP; takes effect from the next attempt."""
        self.url, self.token = url, token
        self.request_timeout, self.max_retry_delay = request_timeout, max_retry_delay

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + INGEST_PATH

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, key: str, body: bytes) -> Answer:
        """One attempt."""
        session = await self._get_session()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": CONTENT_TYPE_MSGPACK,
            "Idempotency-Key": key,
        }
        try:
            async with session.post(
                self.endpoint, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.request_timeout)
            ) as resp:
                payload = await resp.read()
                return classify(resp.status, payload, resp.headers.get("Retry-After"), time.time())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return Answer(Outcome.RETRY, 0, f"{type(exc).__name__}: {exc}")

    async def deliver(self, key: str, body: bytes, deadline: float | None = None) -> Answer:
        """Attempt until ACK or REJECT; returns the last RETRY answer once `deadline` (monotonic) passes."""
        attempt = 0
        while True:
            answer = await self.send(key, body)
            if answer.outcome is not Outcome.RETRY:
                return answer
            wait = backoff.delay(attempt, self.rand(), cap=self.max_retry_delay, retry_after=answer.retry_after)
            if attempt == 0 or attempt % 10 == 0:
                log.warning(
                    "collector not accepting batch, will retry",
                    extra=kv(key=key, status=answer.status, reason=answer.reason, attempt=attempt + 1, wait_s=round(wait, 2)),
                )
            if self.on_retry is not None:
                self.on_retry(answer)
            if deadline is not None and time.monotonic() + wait > deadline:
                return answer
            await self.sleep(wait)
            attempt += 1
