"""The agent's run loop: tail -> parse -> enrich -> aggregate -> spool -> ship.

Strategy and rules
- One asyncio loop, two tasks. The READ task polls every source's Tailer, parses,
  enriches and aggregates the lines (plain CPU work, kept tight: no per-line logging or
  metric objects; counts live in locals and reach the metrics once per chunk), keeps each
  accepted record's activity record (agent.activity) next to the Aggregator, and every
  `collector.flush_interval` (or sooner once `max_batch_rows` rows or
  `activity.max_records_per_batch` activity records are pending) drains both into ONE
  spool file together with every source's checkpoint: activity records ride in the same
  body, under the same Idempotency-Key, as the rows of the same lines, so they share the
  rows' exactly-once delivery across restarts, kill -9, rotation and outages. The SHIP task
  sends spool files in sequence order and acknowledges them in the spool (see
  agent.spool for why this is exactly-once).
- Lines are processed as soon as poll() returns them, so `Tailer.checkpoint()` at flush
  time covers exactly the lines inside the drained batch.
- Timed flushes are aligned to the wall clock: at every multiple of flush_interval past
  the epoch, plus a grace (agent.flushclock, at most a quarter of the interval) for the lines
  of the period just closed that are logged late (squid and haproxy log a request when
  it ends). With flush_interval = 60 each minute's rows thus leave about once, shortly
  after the minute closed, instead of once per flush. Every flush still drains
  everything read (so the checkpoints stay exact, as above): alignment only moves when
  flushes happen. A wall clock that jumps is covered by a monotonic fallback (two
  intervals without any flush flush at once).
- Spool full (`spool.max_bytes`): the READ task stops polling (the proxy's own log is the
  buffer) until acks free space; logged once per episode and exposed as a metric.
- Config changes (SIGHUP) are applied by the READ task between passes: flush first (so
  every line read so far is in the spool with its positions), then rebuild only what
  changed; a source whose settings are unchanged keeps its Tailer and position.
- Shutdown (SIGTERM/SIGINT) and the end of `--once`: stop reading, flush, cancel the SHIP
  task (an interrupted request is harmless: the batch stays spooled under its key) and
  deliver what is left with a deadline. Whatever is still unacknowledged stays in the
  spool and is resent with its original key on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import time
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from agent import config as config_mod
from agent.activity import ActivityLog
from agent.wire import gcsettings
from agent.aggregate import Aggregator
from agent.config import Config, Source
from agent.domains import DomainResolver
from agent.enrich import Enricher
from agent.flushclock import next_flush_at
from agent.metrics import AgentMetrics, start_server
from agent.parsers import LineParser, make_parser
from agent.parsers.dante import DanteParser
from agent.record import ParseError, Record
from agent.shipper import Answer, Outcome, Shipper
from agent.spool import Checkpoints, Spool
from agent.tailer import Chunk, Tailer
from agent.users import UserMapper
from agent.wire import logfmt, sdnotify
from agent.wire.compact import encode_compact
from agent.wire.logfmt import kv
from agent.wire.prometheus import RELOAD_APPLIED, RELOAD_REFUSED
from agent.wire.tomlschema import ConfigError

log = logging.getLogger(__name__)

POLL_BYTES = 4 * 1024 * 1024  # per source per pass: bounds the time between event-loop turns
POLL_STEP = 512 * 1024  # per Tailer.poll: bounds how far a batch can go over max_batch_rows
ERROR_SAMPLE_EVERY = 10.0  # seconds between logged samples of unparsable lines, per source
LIMIT_LOG_EVERY = 60.0  # seconds between warnings about a limit that keeps being hit
# Tailer counters exposed as proxymeter_agent_file_events_total{event} (the Tailer logs
# each one as it happens): files deleted while open, copytruncate copies and rotated
# files found and read, the open-file limit hit, an unfinished last line dropped with
# its file, saved positions whose file is gone, read errors.
FILE_EVENTS = ("deletions", "copies_found", "siblings_recovered", "open_limit_hits", "partial_dropped",
               "saved_dropped", "read_errors")

# Exit statuses of `run` (sysexits.h): 78 config (cli), 65 data rejected, 75 temporary failure.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_REJECTED = 65
EXIT_UNDELIVERED = 75


_LOCAL_ACK = Answer(Outcome.ACK, 0, "positions only")


@dataclass
class SourceRuntime:
    cfg: Source
    tailer: Tailer
    parser: LineParser
    seen: dict[str, int] = field(default_factory=dict)  # tailer stats already added to metrics
    last_error_log: float = -1e9
    last_limit_log: float = -1e9


def _stat(stats: Any, name: str) -> int:
    return int(getattr(stats, name, 0) or 0)


FD_RESERVE = 64  # descriptors besides the log files: sockets, spool and checkpoint files, stdio


def _check_fd_budget(cfg: Config) -> None:
    """Warn when the sources' max_open_files add up past the process's descriptor limit
    (the unit sets LimitNOFILE=65536): the opens past it would fail with EMFILE, each
    counted in file_events_total{event="read_errors"} and logged, but better known now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sum(s.max_open_files for s in cfg.sources) + FD_RESERVE
    if soft != resource.RLIM_INFINITY and wanted > soft:
        log.warning(
            "the sources' max_open_files exceed the process's open-file limit (raise LimitNOFILE or lower them)",
            extra=kv(max_open_files=wanted - FD_RESERVE, reserve=FD_RESERVE, nofile=soft),
        )


class Agent:
    def __init__(self, cfg: Config, config_path: str | Path | None = None, metrics: AgentMetrics | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics or AgentMetrics()
        self.sources: list[SourceRuntime] = []
        self.positions: Checkpoints = {}
        self.rejected = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._ship_wake = asyncio.Event()
        self._reload_requested = False
        self._paused = False
        self._last_flush = time.monotonic()
        self._next_flush = 0.0  # wall clock; set by _schedule_flush
        self._unmatched_seen = 0
        self._fixed_seen = 0
        self._last_fixed_log = -1e9
        self._activity_seen = {"sampled_out": 0, "disabled": 0, "fixed": 0}
        self._last_activity_fixed_log = -1e9
        self._files_waiting = False  # the last read pass left files waiting for an open-file limit

    # -- building the pipeline ---------------------------------------------------------
    def _build_enricher(self, cfg: Config) -> Enricher:
        return Enricher(UserMapper(cfg.users), DomainResolver.load(cfg.agent.public_suffix_list or None))

    def _build_aggregator(self, cfg: Config) -> Aggregator:
        return Aggregator(cfg.agent.worker, dimensions=cfg.aggregate.dimensions,
                          max_duration_ms=cfg.aggregate.max_duration_ms)

    def _build_activity(self, cfg: Config) -> ActivityLog:
        return ActivityLog(cfg.agent.worker, cfg.activity.settings)

    def _batch_full(self) -> bool:
        """Enough waiting for a body: flush now rather than at the next interval."""
        agg = self.aggregator
        return agg.pending_rows + agg.pending_profiles >= self.cfg.collector.max_batch_rows or self.activity.full

    def _open_source(self, scfg: Source, saved: list[dict[str, Any]] | None) -> SourceRuntime:
        tailer = Tailer(
            scfg.path, read_from=scfg.read_from, max_line_bytes=scfg.max_line_bytes, saved=saved,
            fingerprint_bytes=scfg.fingerprint_bytes, max_open_files=scfg.max_open_files,
            rotated_idle_polls=scfg.rotated_idle_polls,
        )
        parser = make_parser(scfg.format, zoneinfo.ZoneInfo(scfg.timezone), max_open_sessions=scfg.max_open_sessions)
        log.info(
            "source opened",
            extra=kv(path=scfg.path, format=scfg.format, resumed=saved is not None, read_from=scfg.read_from),
        )
        return SourceRuntime(scfg, tailer, parser)

    # -- public control ------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    async def run(self, once: bool = False) -> int:
        cfg = self.cfg
        self.spool = Spool(cfg.agent.state_dir, cfg.spool.max_bytes)
        self.positions = dict(self.spool.resume_checkpoints())
        self._spooled_positions = dict(self.positions)
        self.enricher = self._build_enricher(cfg)
        self.aggregator = self._build_aggregator(cfg)
        self.activity = self._build_activity(cfg)
        _check_fd_budget(cfg)
        self.sources = [self._open_source(s, self.positions.get(s.path)) for s in cfg.sources]
        self.shipper = Shipper(
            cfg.collector.url,
            config_mod.token_of(cfg),
            request_timeout=cfg.collector.request_timeout,
            max_retry_delay=cfg.collector.max_retry_delay,
            on_retry=self._on_retry,
        )
        # A source with no saved position gets one now (an empty batch carrying only read
        # positions): otherwise a crash before the first flush followed by a rotation would
        # leave the rotated file outside the glob with nothing pointing at it.
        self._flush()
        self._schedule_flush()
        self._update_spool_metrics()
        gcsettings.settle()  # start-up is done: see agent.wire.gcsettings
        runner = None
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Any]] = []
        try:
            if cfg.agent.metrics_listen:
                runner = await start_server(self.metrics, cfg.agent.metrics_listen)
                log.info("metrics served", extra=kv(listen=cfg.agent.metrics_listen, path="/metrics"))
            for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self.request_reload)):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, handler)
            log.info(
                "agent started",
                extra=kv(agent_id=self.spool.agent_id, worker=cfg.agent.worker, sources=len(self.sources),
                         collector=cfg.collector.url, once=once, pending_batches=len(self.spool.pending)),
            )
            sdnotify.notify(sdnotify.READY)
            interval = sdnotify.watchdog_interval()
            if interval is not None:
                tasks.append(asyncio.create_task(sdnotify.watchdog_loop(interval)))
            ship_task = asyncio.create_task(self._ship_loop())
            tasks.append(ship_task)
            await self._read_loop(once)

            # Stop reading, flush, deliver what is left within a deadline.
            for task in tasks:
                if task is not ship_task:
                    task.cancel()
            if not once:
                sdnotify.notify(sdnotify.STOPPING)
            self._flush()
            ship_task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks.clear()
            timeout = cfg.collector.once_timeout if once else cfg.collector.shutdown_timeout
            delivered = await self._deliver_all(time.monotonic() + timeout)
            return self._exit_status(once, delivered)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for src in self.sources:
                src.tailer.close()
            await self.shipper.close()
            if runner is not None:
                await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    def _exit_status(self, once: bool, delivered: bool) -> int:
        left = len(self.spool.pending)
        if delivered:
            log.info("all batches acknowledged, exiting", extra=kv(rejected=self.rejected))
        else:
            log.warning(
                "collector did not acknowledge every batch in time; they stay in the spool and are "
                "resent on the next start",
                extra=kv(batches=left, spool_bytes=self.spool.bytes),
            )
        if not once:
            return EXIT_OK
        if self.rejected:
            log.error("the collector rejected batches (see spool/dead-letter)", extra=kv(rejected=self.rejected))
            return EXIT_REJECTED
        return EXIT_OK if delivered else EXIT_UNDELIVERED

    # -- reading -------------------------------------------------------------------------
    async def _read_loop(self, once: bool) -> None:
        while not self._stop.is_set():
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            if self.spool.full:
                if not self._paused:
                    self._paused = True
                    self.metrics.spool_full.set(1)
                    log.warning(
                        "spool full, reading paused until the collector acknowledges batches",
                        extra=kv(spool_bytes=self.spool.bytes, max_bytes=self.spool.max_bytes),
                    )
                await self._sleep(self.cfg.agent.poll_interval)
                continue
            if self._paused:
                self._paused = False
                self.metrics.spool_full.set(0)
                log.info("spool has room again, reading resumed", extra=kv(spool_bytes=self.spool.bytes))
            progress = self._read_pass()
            interval = self.cfg.collector.flush_interval
            if time.time() >= self._next_flush or time.monotonic() - self._last_flush >= 2 * interval:
                self._flush()
                self._schedule_flush()
            elif self._batch_full():
                self._flush()
            if not progress:
                # A file waiting for its source's max_open_files is read on a later poll,
                # once an open one idled for a poll and was parked: --once is not at the
                # end of every source yet (and a poll is all it takes, no need to sleep).
                if once and not self._files_waiting:
                    return
                if once:
                    await asyncio.sleep(0)
                else:
                    await self._sleep(self.cfg.agent.poll_interval)
            else:
                await asyncio.sleep(0)  # let the shipper and the metrics server run

    def _schedule_flush(self) -> None:
        """The next timed flush: the next aligned instant at least half an interval away
        (so a flush made a little late is not followed by another one at once)."""
        interval = self.cfg.collector.flush_interval
        self._next_flush = next_flush_at(time.time() + interval / 2, interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _read_pass(self) -> bool:
        """Up to POLL_BYTES of every source, in polls of at most POLL_STEP bytes; True when
        anything was consumed. Between two polls (every line a poll returned is in the
        aggregator, so the checkpoints cover exactly what a flush drains) a batch that
        reached `collector.max_batch_rows` is flushed at once: however many sources have
        a backlog, a batch holds at most that many rows and profiles plus one poll's worth
        (and likewise at most `activity.max_records_per_batch` activity records plus one
        poll's worth).
        A flush that fills the spool ends the pass (reading pauses, see _read_loop)."""
        progress = False
        waiting = False
        for src in self.sources:
            budget = POLL_BYTES
            while budget > 0:
                step = min(POLL_STEP, budget)
                before = src.tailer.stats.bytes
                self._consume(src, src.tailer.poll(step))
                if self._account_tailer(src):
                    progress = True
                waiting = waiting or src.tailer.waiting
                got = src.tailer.stats.bytes - before
                if self._batch_full():
                    self._flush()
                    if self.spool.full:
                        self._account_enrichment()
                        return True
                if got < step:
                    break  # at the end of what the source has now
                budget -= got
        self._account_enrichment()
        self._files_waiting = waiting
        return progress

    def _consume(self, src: SourceRuntime, chunks: list[Chunk]) -> None:
        """Parse, enrich and aggregate the lines of one poll; count them in the metrics."""
        if not chunks:
            return
        m = self.metrics
        # Every line leaves acyclic objects (a Record, its activity record, row state),
        # many alive until the next flush: the cyclic collector would only walk them
        # again and again, so it is paused for the poll, as Aggregator.drain does.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            n_lines, n_records, errors, sample = _parse_lines(
                chunks, src.parser.parse, self.enricher.enrich, self.aggregator.add, self.activity.add
            )
        finally:
            if paused:
                gc.enable()
        label = src.cfg.path
        if n_lines:
            m.lines.inc(n_lines, label)
            m.records.inc(n_records, label)
        if errors:
            for reason, n in errors.items():
                m.parse_errors.inc(n, label, reason)
            now = time.monotonic()
            if sample is not None and now - src.last_error_log >= ERROR_SAMPLE_EVERY:
                src.last_error_log = now
                log.warning(
                    "unparsable lines skipped",
                    extra=kv(source=label, format=src.cfg.format, count=sum(errors.values()),
                             error=sample[0], line=sample[1][:300].decode("utf-8", "replace")),
                )

    def _account_enrichment(self) -> None:
        """Unmatched users and fitted values since the last pass, into the metrics."""
        m = self.metrics
        unmatched = _stat(self.enricher, "unmatched_users")
        if unmatched > self._unmatched_seen:
            m.unmatched_users.inc(unmatched - self._unmatched_seen)
        self._unmatched_seen = unmatched
        fixed = _stat(self.aggregator, "values_fixed")
        if fixed > self._fixed_seen:
            m.values_fixed.inc(fixed - self._fixed_seen)
            now = time.monotonic()
            if now - self._last_fixed_log >= LIMIT_LOG_EVERY:
                self._last_fixed_log = now
                log.warning(
                    "dimension values over the ingest limits were cut or zeroed",
                    extra=kv(values=fixed - self._fixed_seen, total=fixed),
                )
        self._fixed_seen = fixed
        m.pending_rows.set(self.aggregator.pending_rows)
        seen = self._activity_seen
        act = self.activity
        for result, value in (("sampled_out", act.sampled_out), ("disabled", act.disabled)):
            if value > seen[result]:
                m.activity.inc(value - seen[result], result)
            seen[result] = value
        if act.fixed > seen["fixed"]:
            m.activity_fixed.inc(act.fixed - seen["fixed"])
            now = time.monotonic()
            if now - self._last_activity_fixed_log >= LIMIT_LOG_EVERY:
                self._last_activity_fixed_log = now
                log.warning(
                    "activity values over the ingest limits were cut or nulled",
                    extra=kv(values=act.fixed - seen["fixed"], total=act.fixed),
                )
        seen["fixed"] = act.fixed

    def _account_tailer(self, src: SourceRuntime) -> bool:
        """Add the tailer's counters since the last pass to the metrics; True if bytes moved."""
        stats = src.tailer.stats
        label = src.cfg.path
        moved = False
        for name, metric in (("bytes", self.metrics.bytes), ("too_long", self.metrics.lines_too_long)):
            value = _stat(stats, name)
            delta = value - src.seen.get(name, 0)
            if delta > 0:
                metric.inc(delta, label)
                moved = True
            src.seen[name] = value
        rot = _stat(stats, "rotations") + _stat(stats, "truncations")
        if rot > src.seen.get("rot", 0):
            self.metrics.rotations.inc(rot - src.seen.get("rot", 0), label)
        src.seen["rot"] = rot
        for name in FILE_EVENTS:
            value = _stat(stats, name)
            delta = value - src.seen.get(name, 0)
            if delta > 0:
                self.metrics.file_events.inc(delta, label, name)
            src.seen[name] = value
        forgotten = _stat(src.parser, "forgotten")
        delta = forgotten - src.seen.get("forgotten", 0)
        if delta > 0:
            self.metrics.sessions_forgotten.inc(delta, label)
            now = time.monotonic()
            if now - src.last_limit_log >= LIMIT_LOG_EVERY:
                src.last_limit_log = now
                log.warning(
                    "open-session limit reached, oldest open lines forgotten (their sessions start "
                    "from the logged whole-second duration)",
                    extra=kv(source=label, forgotten=delta, max_open=_stat(src.parser, "max_open")),
                )
        src.seen["forgotten"] = forgotten
        return moved

    # -- flushing into the spool --------------------------------------------------------
    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        batch = self.aggregator.drain(int(time.time() * 1000))
        batch.activity = self.activity.drain()
        for src in self.sources:
            self.positions[src.cfg.path] = src.tailer.checkpoint()
        if not batch.rows and not batch.profiles and not batch.activity and self.positions == self._spooled_positions:
            self._update_lag()
            return
        entry = self.spool.append(encode_compact(batch), dict(self.positions), len(batch.rows), len(batch.profiles),
                                  len(batch.activity))
        self._spooled_positions = dict(self.positions)
        self.metrics.activity.inc(entry.activity, "spooled")
        log.debug("batch spooled", extra=kv(key=entry.key, rows=entry.rows, profiles=entry.profiles,
                                            activity=entry.activity, bytes=entry.size))
        self._update_spool_metrics()
        self._update_lag()
        self.metrics.pending_rows.set(0)
        self._ship_wake.set()

    def _update_lag(self) -> None:
        gauge = self.metrics.lag
        gauge.values.clear()
        for src in self.sources:
            for path, lag in src.tailer.lag().items():
                gauge.set(lag, path)

    def _update_spool_metrics(self) -> None:
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.metrics.spool_batches.set(len(self.spool.pending))

    # -- shipping -----------------------------------------------------------------------
    def _on_retry(self, answer: Answer) -> None:
        self.metrics.batches_retried.inc(1, str(answer.status))

    def _settle(self, answer: Answer) -> None:
        entry = self.spool.first()
        assert entry is not None
        if answer is _LOCAL_ACK:
            self.spool.ack(entry)
        elif answer.outcome is Outcome.ACK:
            self.spool.ack(entry)
            self.metrics.batches_sent.inc()
            self.metrics.rows_shipped.inc(entry.rows)
            self.metrics.profiles_shipped.inc(entry.profiles)
            self.metrics.activity.inc(entry.activity, "shipped")
            self.metrics.last_ack.set(time.time())
        else:
            target = self.spool.dead_letter(entry, answer.status, answer.reason)
            self.rejected += 1
            self.metrics.batches_dead.inc()
            self.metrics.activity.inc(entry.activity, "dead_lettered")
            log.error(
                "collector rejected batch; moved to dead-letter",
                extra=kv(key=entry.key, status=answer.status, reason=answer.reason, file=target, rows=entry.rows,
                         activity=entry.activity),
            )
        self._update_spool_metrics()
        self._wake.set()  # the reader may be waiting for spool room

    async def _ship_loop(self) -> None:
        while True:
            entry = self.spool.first()
            if entry is None:
                await self._ship_wake.wait()
                self._ship_wake.clear()
                continue
            if entry.empty:
                self._settle(_LOCAL_ACK)  # only read positions: nothing for the collector
                continue
            body, _ = entry.read()
            answer = await self.shipper.deliver(entry.key, body)
            self._settle(answer)

    async def _deliver_all(self, deadline: float) -> bool:
        while (entry := self.spool.first()) is not None:
            if entry.empty:
                self._settle(_LOCAL_ACK)
                continue
            if time.monotonic() >= deadline:
                return False
            body, _ = entry.read()
            try:
                answer = await asyncio.wait_for(
                    self.shipper.deliver(entry.key, body, deadline=deadline), max(0.01, deadline - time.monotonic())
                )
            except asyncio.TimeoutError:
                return False
            if answer.outcome is Outcome.RETRY:
                return False
            self._settle(answer)
        return True

    # -- reload -------------------------------------------------------------------------
    def _reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP ignored: the agent was not started from a config file")
            return
        sdnotify.notify(sdnotify.RELOADING)
        try:
            new = config_mod.load(self.config_path)
            token = config_mod.token_of(new)
        except ConfigError as exc:
            self.metrics.reloads.inc(1, RELOAD_REFUSED)
            log.error("new config refused, keeping the running one", extra=kv(path=self.config_path, error=str(exc)))
            sdnotify.notify(sdnotify.READY)
            return
        old = self.cfg
        self._flush()  # every line read so far is now spooled with its positions
        for key in ("state_dir", "metrics_listen"):
            if getattr(old.agent, key) != getattr(new.agent, key):
                log.warning("setting changes only on restart", extra=kv(key=f"agent.{key}"))
        _check_fd_budget(new)
        by_path = {s.cfg.path: s for s in self.sources}
        sources: list[SourceRuntime] = []
        for scfg in new.sources:
            cur = by_path.pop(scfg.path, None)
            if cur is not None and cur.cfg == scfg:
                sources.append(cur)
                continue
            if cur is not None:
                cur.tailer.close()
            fresh = self._open_source(scfg, self.positions.get(scfg.path))
            if cur is not None and isinstance(cur.parser, DanteParser) and isinstance(fresh.parser, DanteParser):
                # The new reader resumes right after the open lines the old parser holds:
                # their close lines are still to come, so the sessions carry over.
                fresh.parser.take_open_sessions(cur.parser)
            sources.append(fresh)
        for gone in by_path.values():
            gone.tailer.close()
            log.info("source removed", extra=kv(path=gone.cfg.path))
        self.sources = sources
        if (old.agent.worker, old.aggregate) != (new.agent.worker, new.aggregate):
            self.aggregator = self._build_aggregator(new)  # empty after the flush above
            self._fixed_seen = 0
        if (old.agent.worker, old.activity) != (new.agent.worker, new.activity):
            self.activity = self._build_activity(new)  # empty after the flush above
            self._activity_seen = {"sampled_out": 0, "disabled": 0, "fixed": 0}
        if (old.users, old.agent.public_suffix_list) != (new.users, new.agent.public_suffix_list):
            self.enricher = self._build_enricher(new)
            self._unmatched_seen = 0
        self.shipper.configure(new.collector.url, token, new.collector.request_timeout, new.collector.max_retry_delay)
        self.spool.max_bytes = new.spool.max_bytes
        if old.agent.log_level != new.agent.log_level:
            logfmt.setup(new.agent.log_level)
        state_dir, listen = old.agent.state_dir, old.agent.metrics_listen
        self.cfg = new
        if (state_dir, listen) != (new.agent.state_dir, new.agent.metrics_listen):
            from dataclasses import replace

            self.cfg = replace(new, agent=replace(new.agent, state_dir=state_dir, metrics_listen=listen))
        self._schedule_flush()  # flush_interval may have changed
        self.metrics.reloads.inc(1, RELOAD_APPLIED)
        log.info("config reloaded", extra=kv(path=self.config_path, sources=len(self.sources)))
        sdnotify.notify(sdnotify.READY)


def _parse_lines(
    chunks: list[Chunk],
    parse: Callable[[bytes], Record | None],
    enrich: Callable[[Record], None],
    add: Callable[[Record], None],
    keep: Callable[[Record], None],
) -> tuple[int, int, dict[str, int] | None, tuple[str, bytes] | None]:
    """The per-line loop of AgentService._consume: (lines, records, errors by reason,
    the first error's (message, line))."""
    n_lines = 0
    n_records = 0
    errors: dict[str, int] | None = None
    sample: tuple[str, bytes] | None = None
    for chunk in chunks:
        lines = chunk.lines
        n_lines += len(lines)
        for line in lines:
            try:
                rec = parse(line)
                if rec is not None:
                    enrich(rec)
                    add(rec)  # raises for a record it refuses: then no activity either
                    keep(rec)
                    n_records += 1
            except ParseError as exc:
                if errors is None:
                    errors = {}
                errors[exc.reason] = errors.get(exc.reason, 0) + 1
                if sample is None:
                    sample = (str(exc), line)
            except Exception as exc:
                # The aggregator's ValueError (e.g. a duration over its maximum) or a
                # bug in a parser must not stop the agent: count the line, keep going.
                reason = "record_rejected" if isinstance(exc, ValueError) else "internal_error"
                if errors is None:
                    errors = {}
                errors[reason] = errors.get(reason, 0) + 1
                if sample is None:
                    sample = (f"{type(exc).__name__}: {exc}", line)
    return n_lines, n_records, errors, sample
