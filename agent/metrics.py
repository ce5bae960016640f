"""Every self-metric of the agent, in one place, and the tiny /metrics HTTP server.

The run loop counts in locals and adds to these once per chunk of lines, never per line.
"""

from __future__ import annotations

import logging

from aiohttp import web

from agent.wire.prometheus import CONTENT_TYPE, RELOAD_RESULTS, Registry

log = logging.getLogger(__name__)

# proxymeter_agent_activity_records_total{result}: what became of each request's
# activity record. spooled + sampled_out + disabled = every record aggregated; of the
# spooled ones, shipped (acknowledged) or dead_lettered (kept in spool/dead-letter/).
ACTIVITY_RESULTS = ("spooled", "sampled_out", "disabled", "shipped", "dead_lettered")


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = Registry()
        self.lines = r.counter("proxymeter_agent_lines_read_total", "Complete log lines read", ["source"])
        self.bytes = r.counter("proxymeter_agent_bytes_read_total", "Log bytes read", ["source"])
        self.records = r.counter("proxymeter_agent_records_total", "Requests parsed and aggregated", ["source"])
        self.parse_errors = r.counter(
            "proxymeter_agent_parse_errors_total", "Lines skipped because they did not parse", ["source", "reason"]
        )
        self.lines_too_long = r.counter(
            "proxymeter_agent_lines_too_long_total", "Lines skipped for exceeding sources.max_line_bytes", ["source"]
        )
        self.unmatched_users = r.counter(
            "proxymeter_agent_unmatched_users_total", "Records whose user name matched no users pattern"
        )
        self.rotations = r.counter("proxymeter_agent_rotations_total", "Log rotations and truncations seen", ["source"])
        self.file_events = r.counter(
            "proxymeter_agent_file_events_total",
            "Rarer file-following events (see agent.service.FILE_EVENTS); the lossy ones are also logged",
            ["source", "event"],
        )
        self.sessions_forgotten = r.counter(
            "proxymeter_agent_open_sessions_forgotten_total",
            "dante open lines forgotten at the open-session limit (their close uses the logged duration)",
            ["source"],
        )
        self.values_fixed = r.counter(
            "proxymeter_agent_values_fixed_total", "Dimension values cut or zeroed to fit the ingest limits"
        )
        self.lag = r.gauge("proxymeter_agent_lag_bytes", "Bytes not yet read behind each file's end", ["path"])
        self.batches_sent = r.counter("proxymeter_agent_batches_sent_total", "Batches acknowledged by the collector")
        self.batches_retried = r.counter(
            "proxymeter_agent_batches_retried_total", "Failed delivery attempts that will be retried", ["status"]
        )
        self.batches_dead = r.counter(
            "proxymeter_agent_batches_dead_lettered_total", "Batches rejected by the collector and set aside"
        )
        self.rows_shipped = r.counter("proxymeter_agent_rows_shipped_total", "Minute rows acknowledged")
        self.profiles_shipped = r.counter(
            "proxymeter_agent_profiles_shipped_total", "Concurrency profiles acknowledged"
        )
        self.activity = r.counter(
            "proxymeter_agent_activity_records_total",
            "Activity records by what became of them (see agent.metrics.ACTIVITY_RESULTS)",
            ["result"],
        )
        for result in ACTIVITY_RESULTS:
            self.activity.inc(0, result)
        self.activity_fixed = r.counter(
            "proxymeter_agent_activity_values_fixed_total",
            "Activity record values cut or nulled to fit the ingest limits",
        )
        self.spool_bytes = r.gauge("proxymeter_agent_spool_bytes", "Bytes of unacknowledged batches in the spool")
        self.spool_batches = r.gauge("proxymeter_agent_spool_batches", "Unacknowledged batches in the spool")
        self.spool_full = r.gauge(
            "proxymeter_agent_spool_full", "1 while the spool is at spool.max_bytes and reading is paused"
        )
        self.last_ack = r.gauge(
            "proxymeter_agent_last_ack_timestamp_seconds", "Unix time of the last batch the collector acknowledged"
        )
        self.pending_rows = r.gauge("proxymeter_agent_pending_rows", "Rows aggregated and not yet flushed")
        self.reloads = r.counter("proxymeter_agent_reloads_total", "SIGHUP config reloads, by result", ["result"])
        for result in RELOAD_RESULTS:
            self.reloads.inc(0, result)

    def render(self) -> str:
        return self.registry.render()


async def start_server(metrics: AgentMetrics, listen: str) -> web.AppRunner:
    """Serve GET /metrics on host:port; returns the runner (call .cleanup() to stop)."""
    host, _, port = listen.rpartition(":")

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or None, int(port))
    await site.start()
    return runner
