"""proxymeter-agent: `run --config PATH [--once]`, `check --config PATH` and
`redeliver --config PATH` (resend the batches in spool/dead-letter; see agent.redeliver).

Exit statuses: 0 ok; 78 config error (tomlschema.EXIT_CONFIG, also at `run` start, so
systemd's RestartPreventExitStatus=78 stops a crash loop); for `run --once` 65 when the
collector rejected a batch (set aside in spool/dead-letter) and 75 when batches were still
unacknowledged after collector.once_timeout (they stay spooled and are resent next time);
`redeliver` uses the same 0/65/75; 1 for other start-up failures (state_dir not writable, metrics address in use).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent import config as config_mod
from agent.wire import eventloop, logfmt
from agent.wire.logfmt import kv
from agent.wire.tomlschema import EXIT_CONFIG, ConfigError

log = logging.getLogger("agent")
T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxymeter-agent", description="Tail proxy logs and ship per-minute stats.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", required=True, help="path to agent.toml")
    run.add_argument("--once", action="store_true", help="read every source to its end, deliver, wait for the ack, exit")
    red = sub.add_parser("redeliver", help="resend the batches in spool/dead-letter (after fixing the cause)")
    red.add_argument("--config", required=True, help="path to agent.toml")
    chk = sub.add_parser("check", help="validate the config and exit (0 ok, 78 error)")
    chk.add_argument("--config", required=True, help="path to agent.toml")
    return p


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `coro_fn()` on uvloop when available, logging which loop it is."""

    async def main() -> T:
        log.info("event loop", extra=kv(loop=eventloop.loop_name()))
        return await coro_fn()

    with asyncio.Runner(loop_factory=eventloop.loop_factory()) as runner:
        return runner.run(main())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        config_mod.token_of(cfg)
    except ConfigError as exc:
        if args.command == "check":
            print(f"config error: {exc}", file=sys.stderr)
        else:  # a service start: one log event, like every other line in the journal
            logfmt.setup("info")
            log.error("config error, not starting", extra=kv(config=args.config, error=str(exc)))
        return EXIT_CONFIG
    if args.command == "check":
        print("config OK")
        return 0
    logfmt.setup(cfg.agent.log_level)
    from agent.spool import SpoolError

    if args.command == "redeliver":
        from agent.redeliver import redeliver

        try:
            return _run(lambda: redeliver(cfg)).exit_status
        except (OSError, SpoolError) as exc:
            log.error("redeliver failed", extra=kv(error=f"{type(exc).__name__}: {exc}"))
            return 1
    from agent.service import Agent  # the pipeline imports only when running

    agent = Agent(cfg, args.config)
    try:
        return _run(lambda: agent.run(once=args.once))
    except ConfigError as exc:
        log.error("config error", extra=kv(error=str(exc)))
        return EXIT_CONFIG
    except (OSError, SpoolError) as exc:
        log.error("agent failed to start", extra=kv(error=f"{type(exc).__name__}: {exc}"))
        return 1
