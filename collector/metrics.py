"""Every self-metric of the collector, in one place (served at GET /metrics)."""

from __future__ import annotations

from agent.wire.prometheus import RELOAD_RESULTS, Registry

QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REJECT_REASONS = ("invalid_body", "too_large", "unauthorized", "forbidden", "storage_error")


class CollectorMetrics:
    def __init__(self) -> None:
        r = self.registry = Registry()
        self.batches = r.counter("proxymeter_collector_batches_ingested_total", "Ingest bodies applied")
        self.rows = r.counter("proxymeter_collector_rows_ingested_total", "Rows applied from ingest bodies")
        self.profiles = r.counter(
            "proxymeter_collector_profiles_ingested_total", "Concurrency profiles applied from ingest bodies"
        )
        self.activity = r.counter(
            "proxymeter_collector_activity_ingested_total", "Activity records appended from ingest bodies"
        )
        self.bytes = r.counter("proxymeter_collector_ingest_bytes_total", "Bytes of ingest bodies applied")
        self.duplicate_batches = r.counter(
            "proxymeter_collector_duplicate_batches_total", "Ingest bodies skipped: Idempotency-Key already applied"
        )
        self.rejects = r.counter(
            "proxymeter_collector_ingest_rejects_total", "Ingest bodies refused, by reason", ["reason"]
        )
        for reason in REJECT_REASONS:
            self.rejects.inc(0, reason)
        self.ingest_seconds = r.histogram(
            "proxymeter_collector_ingest_seconds", "Time to validate and store one ingest body", buckets=QUERY_BUCKETS
        )
        self.query_seconds = r.histogram(
            "proxymeter_collector_query_seconds", "Query latency per endpoint", ["endpoint"], buckets=QUERY_BUCKETS
        )
        self.query_errors = r.counter(
            "proxymeter_collector_query_errors_total", "Queries answered with an error, by endpoint and status",
            ["endpoint", "status"],
        )
        self.store_size = r.gauge(
            "proxymeter_collector_store_size_bytes", "Size of the store on disk (database + WAL)"
        )
        self.retention_deleted = r.counter(
            "proxymeter_collector_retention_deleted_rows_total", "Rows removed by retention, by table", ["table"]
        )
        self.reloads = r.counter(
            "proxymeter_collector_config_reloads_total", "SIGHUP config reloads, by result", ["result"]
        )
        for result in RELOAD_RESULTS:
            self.reloads.inc(0, result)
        self.tokens = r.gauge("proxymeter_collector_tokens", "Tokens configured")

    def render(self) -> str:
        return self.registry.render()
