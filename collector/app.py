"""The aiohttp application: thin handlers over params -> plan -> Store -> render.

`create_app(config)` builds the app; the store is opened and closed by a cleanup
context, so the same factory serves the CLI and the in-process tests. Errors are JSON:
{"error": {"code": "...", "message": "...", "field": "..." | null}}, including an
unexpected failure (500 internal_error), so a client never has to parse anything else.
Under /api/v2/ (the Webshare-compatible API) errors take the shape Webshare's (Django
REST framework) clients parse instead: a 400 is {"<parameter>": ["<message>"]}, any
other error {"detail": "<message>"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from agent.wire.batch import WireError
from agent.wire.logfmt import kv
from agent.wire.prometheus import CONTENT_TYPE as PROM_CONTENT_TYPE
from collector import geoip, params, plan, render
from collector.fastdecode import decode as decode_body
from collector.auth import AuthError, Principal, TokenTable, new_token, scope_user
from collector.config import CollectorConfig, StorageConfig
from collector.geoip import CountryTable
from collector.metrics import CollectorMetrics
from collector.model import Filter
from collector.openapi import build_openapi
from collector.storage import Store, StoreError, make_store

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 200
READ_ROLES = ("admin", "user")
INGEST_ROLES = ("agent",)


@dataclass
class State:
    config: CollectorConfig
    tokens: TokenTable
    metrics: CollectorMetrics
    clock: Callable[[], float]
    store: Store | None = None
    limits: params.Limits = field(default_factory=params.Limits)
    # [storage] as the store was opened with: a reload does not apply [storage], so
    # neither do the API limits derived from it (how far back the data goes).
    storage: StorageConfig | None = None
    geo: CountryTable | None = None  # the GeoIP table of countries_used, if configured

    def apply_config(self, config: CollectorConfig, geo: CountryTable | None = None) -> None:
        """Take a re-read config's token list, query limits and GeoIP table (SIGHUP);
        `geo` is the table of config.geoip.path, read by the caller (collector.geoip.load)."""
        self.config = config
        self.geo = geo
        self.tokens = TokenTable(config.auth.tokens)
        if self.storage is None:
            self.storage = config.storage
        q, s = config.query, self.storage
        self.limits = params.Limits(
            q.max_range_days, q.target_points, q.max_points,
            q.activity_max_page_size, q.activity_chunk_rows, s.activity_retention_days, s.retention_days,
        )  # fmt: skip
        self.metrics.tokens.set(len(self.tokens))


STATE = web.AppKey("state", State)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


V2 = "/api/v2/"


def error_response(
    status: int, code: str, message: str, field: str | None = None, *, webshare: bool = False
) -> web.Response:
    body: dict[str, Any]
    if not webshare:
        body = {"error": {"code": code, "message": message, "field": field}}
    elif status == 400:
        body = {field or "non_field_errors": [message]}
    else:
        body = {"detail": message}
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    ws = request.path.startswith(V2)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field, webshare=ws)
    except AuthError as exc:
        return error_response(exc.status, exc.code, exc.message, webshare=ws)
    except params.ParamError as exc:
        return error_response(400, "invalid_parameter", exc.message, exc.field, webshare=ws)
    except StoreError as exc:
        return error_response(503, "storage_unavailable", str(exc), webshare=ws)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, webshare=ws)
    except Exception:
        # A bug, not the client's fault: logged with its traceback, answered as JSON
        # like every other error (the agent retries a 5xx; nothing was stored).
        log.exception("request failed", extra=kv(method=request.method, path=request.path))
        return error_response(500, "internal_error", "internal error (see the collector's log)", webshare=ws)


def _state(request: web.Request) -> State:
    return request.app[STATE]


def _store(state: State) -> Store:
    assert state.store is not None, "store not open"
    return state.store


# ---- ingest ---------------------------------------------------------------------------


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"body of {request.content_length} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"body is over the limit of {limit} bytes")
    return bytes(body)


async def ingest(request: web.Request) -> web.Response:
    state = _state(request)
    m = state.metrics
    started = time.perf_counter()
    try:
        state.tokens.authenticate(request.headers, INGEST_ROLES)
    except AuthError as exc:
        m.rejects.inc(1, exc.code)
        raise
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        m.rejects.inc(1, "invalid_body")
        raise ApiError(400, "invalid_header", f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} characters", "Idempotency-Key")
    try:
        body = await _read_body(request, state.config.server.max_body_bytes)
    except ApiError:
        m.rejects.inc(1, "too_large")
        log.warning("ingest body over the limit", extra=kv(limit=state.config.server.max_body_bytes, remote=request.remote))
        raise
    try:
        # Off the loop: a 16 MiB body takes a while to validate.
        batch = await asyncio.get_running_loop().run_in_executor(
            None, decode_body, body, request.headers.get("Content-Type", ""), state.config.server.max_rows
        )
    except WireError as exc:
        m.rejects.inc(1, "invalid_body")
        log.info("ingest body rejected", extra=kv(field=exc.path, error=exc.message, remote=request.remote))
        raise ApiError(400, "invalid_body", exc.message, exc.path or None) from None
    try:
        applied = await _store(state).ingest(batch, key, int(state.clock()))
    except WireError as exc:  # content only the store can judge (sums past int64)
        m.rejects.inc(1, "invalid_body")
        log.info("ingest body rejected", extra=kv(field=exc.path, error=exc.message, remote=request.remote))
        raise ApiError(400, "invalid_body", exc.message, exc.path or None) from None
    except Exception:  # StoreError (503) or a bug (500); the batch was not stored
        m.rejects.inc(1, "storage_error")
        raise
    if applied:
        m.batches.inc()
        m.rows.inc(len(batch.rows))
        m.profiles.inc(len(batch.profiles))
        m.activity.inc(len(batch.activity))
        m.bytes.inc(len(body))
    else:
        m.duplicate_batches.inc()
        log.info("duplicate batch skipped", extra=kv(key=key))
    m.ingest_seconds.observe(time.perf_counter() - started)
    return web.Response(status=204)


# ---- queries --------------------------------------------------------------------------


def _reader(request: web.Request) -> Principal:
    return _state(request).tokens.authenticate(request.headers, READ_ROLES)


def _scoped(principal: Principal, filt: Filter) -> Filter:
    user = scope_user(principal, filt.user_id)
    return Filter(user_id=user, order_id=filt.order_id, domain=filt.domain)


def _timed(
    endpoint: str, fn: Callable[[web.Request], Awaitable[Any]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A query handler with its metrics; `fn` returns a JSON body, or a response it
    has already streamed (the CSV download)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        m = _state(request).metrics
        started = time.perf_counter()
        try:
            body = await fn(request)
        except (ApiError, AuthError, params.ParamError, StoreError) as exc:
            status = getattr(exc, "status", 400 if isinstance(exc, params.ParamError) else 503)
            m.query_errors.inc(1, endpoint, str(status))
            raise
        except Exception:  # answered by errors_middleware as a 500
            m.query_errors.inc(1, endpoint, "500")
            raise
        m.query_seconds.observe(time.perf_counter() - started, endpoint)
        if isinstance(body, web.StreamResponse):
            return body
        return web.json_response(body, dumps=_dumps)

    return handler


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


async def _chart(request: web.Request, kind: str) -> dict[str, Any]:
    state = _state(request)
    principal = _reader(request)
    p = params.parse_chart(request.query, state.limits)
    filt = _scoped(principal, p.common.filter)
    cp = plan.chart_plan(p.common.start, p.common.end, p.step, p.common.tz)
    buckets = await _store(state).chart(
        cp, filt, with_latency=kind == "latency", with_peaks=kind == "concurrency"
    )
    tz = p.common.tz
    if kind == "traffic":
        return render.traffic(cp, buckets, tz)
    if kind == "requests":
        return render.requests(cp, buckets, tz)
    if kind == "concurrency":
        return render.concurrency(cp, buckets, tz, use_profiles=filt.domain is None)
    return render.latency(cp, buckets, tz)


async def _breakdown(request: web.Request, kind: str) -> dict[str, Any]:
    state = _state(request)
    principal = _reader(request)
    p = params.parse_breakdown(kind, request.query, state.limits)
    filt = _scoped(principal, p.common.filter)
    store = _store(state)
    tz = p.common.tz
    if kind == "errors":
        return render.errors(await store.errors(p.common.start, p.common.end, filt), p.limit, tz)
    if kind == "domains":
        return render.domains(await store.domains(p.common.start, p.common.end, filt, order=p.sort_by, limit=p.limit))
    offset = (p.page - 1) * p.limit
    page = await store.domains(p.common.start, p.common.end, filt, order="visits", limit=p.limit, offset=offset)
    return render.websites(page, p.page, p.limit, tz)


def _chart_handler(kind: str) -> Callable[[web.Request], Awaitable[dict[str, Any]]]:
    async def fn(request: web.Request) -> dict[str, Any]:
        return await _chart(request, kind)

    return fn


def _breakdown_handler(kind: str) -> Callable[[web.Request], Awaitable[dict[str, Any]]]:
    async def fn(request: web.Request) -> dict[str, Any]:
        return await _breakdown(request, kind)

    return fn


# ---- /api/v2: the Webshare-compatible API -----------------------------------------------

ACTIVITY_SCOPE = "activity"


def _now_us(state: State) -> int:
    return int(state.clock() * params.US)


async def activity_list(request: web.Request) -> dict[str, Any]:
    state = _state(request)
    principal = _reader(request)
    p = params.parse_activity(request.query, _now_us(state), state.limits)
    user = scope_user(principal, p.window.user_id)
    # One record more than the page: it says whether there is a next page.
    page = await _store(state).activity_page(replace(p.query, user_id=user, limit=p.page_size + 1))
    next_url = None
    if len(page.items) > p.page_size:
        last_id, last = page.items[p.page_size - 1]
        # The window is pinned in the link, so the next page counts and filters the
        # same records even when the first one used the "last six days" default.
        next_url = str(request.url.update_query({
            "timestamp__gte": params.format_utc_us(p.window.start_us),
            "timestamp__lte": params.format_utc_us(p.window.end_us),
            "starting_after": params.format_cursor(last.ts_us, last_id),
        }))  # fmt: skip
    return render.activity_list(page, p.page_size, p.window.tz, next_url)


async def activity_download(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    now = state.clock()
    p = params.parse_activity(request.query, int(now * params.US), state.limits, download=True)
    store = _store(state)
    user: int | None
    if p.download_token is not None:
        tok = await store.find_download_token(p.download_token, ACTIVITY_SCOPE, int(now))
        if tok is None:
            raise AuthError(401, "unauthorized", "invalid or expired download token")
        user = tok.user_id if tok.user_id is not None else p.window.user_id
        if p.window.user_id is not None and p.window.user_id != user:
            raise AuthError(403, "forbidden", "this download token may only download its own user_id")
    else:
        user = scope_user(_reader(request), p.window.user_id)
    chunks = store.activity_stream(replace(p.query, user_id=user)).__aiter__()
    try:
        # The first chunk is read before the response starts, so a store that fails
        # at once still gets a JSON 503; later chunks are written as they are read.
        first = await anext(chunks, [])
        resp = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="proxy_activity.csv"',
        })  # fmt: skip
        await resp.prepare(request)
        tz = p.window.tz
        try:
            await resp.write(render.csv_text(first, tz, header=True).encode())
            async for items in chunks:
                await resp.write(render.csv_text(items, tz).encode())
        except (StoreError, ConnectionResetError) as exc:
            # Too late for an error response: cut the connection, so the client sees
            # a broken transfer instead of a CSV that looks complete.
            log.error("activity download aborted", extra=kv(error=str(exc)))
            state.metrics.query_errors.inc(1, "activity_download", "503" if isinstance(exc, StoreError) else "499")
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        return resp
    finally:
        # A client that went away leaves the stream unfinished: close it now rather
        # than when the event loop shuts down.
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _token_user(request: web.Request) -> int | None:
    principal = _reader(request)
    params.check_known(request.query, params.TOKEN_PARAMS)
    return scope_user(principal, params.parse_int(request.query.get("user_id"), "user_id", None, 0, params.MAX_ID))


async def _download_token(request: web.Request, reset: bool) -> dict[str, Any]:
    state = _state(request)
    user = _token_user(request)
    ttl = state.config.query.download_token_days * plan.DAY
    tok = await _store(state).download_token(user, ACTIVITY_SCOPE, int(state.clock()), ttl, new_token(), reset=reset)
    return render.download_token(tok, plan.UTC)


async def download_token_get(request: web.Request) -> dict[str, Any]:
    return await _download_token(request, reset=False)


async def download_token_reset(request: web.Request) -> dict[str, Any]:
    return await _download_token(request, reset=True)


async def _stats(request: web.Request, aggregate: bool) -> Any:
    state = _state(request)
    principal = _reader(request)
    w = params.parse_stats(request.query, _now_us(state), state.limits)
    filt = Filter(user_id=scope_user(principal, w.user_id), order_id=w.order_id)
    start, end = params.stats_span(w)
    cp = plan.chart_plan(start, end, plan.HOUR, w.tz)
    buckets = await _store(state).hourly_stats(cp, filt)
    if aggregate:
        return render.aggregate_stats(buckets, (w.end_us - w.start_us) / params.US, w.tz, state.geo)
    return render.hourly_stats(cp, buckets, w.tz, state.geo)


async def stats_hourly(request: web.Request) -> Any:
    return await _stats(request, aggregate=False)


async def stats_aggregate(request: web.Request) -> Any:
    return await _stats(request, aggregate=True)


# ---- operations -----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    await _store(_state(request)).ping()
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    state = _state(request)
    state.metrics.store_size.set(await _store(state).size_bytes())
    return web.Response(body=state.metrics.render().encode(), headers={"Content-Type": PROM_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())


# ---- lifecycle ------------------------------------------------------------------------


async def _retention_loop(state: State) -> None:
    while True:
        await asyncio.sleep(state.config.storage.retention_interval)
        try:
            deleted = await _store(state).retention(int(state.clock()))
            for table, n in deleted.items():
                state.metrics.retention_deleted.inc(n, table)
        except StoreError as exc:
            log.error("retention failed", extra=kv(error=str(exc)))


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    if state.store is None:
        state.store = make_store(state.config)
    await state.store.open()
    task = asyncio.create_task(_retention_loop(state))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await state.store.close()


def create_app(
    config: CollectorConfig,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    geo: CountryTable | None = None,
) -> web.Application:
    """The collector app; `store` replaces the configured backend (another backend's
    tests), `clock` supplies "now" for idempotency keys and retention, `geo` the table
    of `geoip.path` when the caller has read it already (else it is read here; a bad
    file raises ConfigError)."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=config.server.max_body_bytes + 1)
    state = State(config=config, tokens=TokenTable(()), metrics=CollectorMetrics(), clock=clock, store=store)
    state.apply_config(config, geoip.load(config.geoip.path) if geo is None else geo)
    app[STATE] = state
    app.cleanup_ctx.append(_store_ctx)
    app.router.add_post("/analytics/ingest", ingest)
    for kind in params.CHART_ENDPOINTS:
        app.router.add_get(f"/analytics/{kind}", _timed(kind, _chart_handler(kind)))
    for kind in params.BREAKDOWN_ENDPOINTS:
        app.router.add_get(f"/analytics/{kind}", _timed(kind, _breakdown_handler(kind)))
    app.router.add_get("/api/v2/proxy/activity/", _timed("activity", activity_list))
    # No HEAD: it would read the whole window only to send no body.
    download = _timed("activity_download", activity_download)
    app.router.add_get("/api/v2/proxy/activity/download/", download, allow_head=False)
    token = _timed("download_token", download_token_get)
    app.router.add_route("GET", "/api/v2/download_token/activity/", token)
    app.router.add_route("POST", "/api/v2/download_token/activity/", token)
    app.router.add_post("/api/v2/download_token/activity/reset/", _timed("download_token", download_token_reset))
    app.router.add_get("/api/v2/stats/", _timed("stats", stats_hourly))
    app.router.add_get("/api/v2/stats/aggregate/", _timed("stats_aggregate", stats_aggregate))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app
