"""proxymeter-collector: serve | check | token create.

serve: binds, opens the store, then tells systemd READY=1; pings the watchdog when
WATCHDOG_USEC is set; SIGHUP re-reads the config and applies the token list, query
limits and log level (a config that fails to load is logged and refused, the running
one stays; listen/storage changes need a restart); SIGTERM/SIGINT send STOPPING=1 and
shut down cleanly (requests finish, the store is closed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from agent.wire import eventloop, gcsettings, sdnotify
from agent.wire.logfmt import kv, set_level as set_log_level, setup as setup_logging
from agent.wire.prometheus import RELOAD_APPLIED, RELOAD_REFUSED
from agent.wire.tomlschema import EXIT_CONFIG, ConfigError
from collector import config as config_mod
from collector import geoip
from collector.app import STATE, create_app
from collector.auth import digest, new_token
from collector.storage.base import StoreError

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxymeter-collector", description="proxymeter collector")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the collector")
    serve.add_argument("--config", required=True, help="path of collector.toml")
    chk = sub.add_parser("check", help="validate a config file and exit (0 ok, 78 bad)")
    chk.add_argument("--config", required=True)
    tok = sub.add_parser("token", help="token helpers")
    tsub = tok.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="make a new random token and its [[auth.tokens]] entry")
    create.add_argument("--role", required=True, choices=config_mod.ROLES)
    create.add_argument("--user-id", type=int, help="required for --role user")
    create.add_argument("--name", help="label for the entry (default: role or user-N)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "token":
        if args.role == "user" and args.user_id is None:
            parser.error("--user-id is required for --role user")
        if args.role != "user" and args.user_id is not None:
            parser.error("--user-id is only for --role user")
        if args.user_id is not None and args.user_id < 0:
            parser.error("--user-id must be >= 0")
        return cmd_token_create(args.role, args.user_id, args.name)
    return cmd_serve(args.config)


def cmd_check(path: str) -> int:
    try:
        geoip.load(config_mod.load(path).geoip.path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("config OK")
    return 0


def _toml_str(value: str) -> str:
    """A TOML basic string. JSON escapes the quote, the backslash and U+0000-U+001F with
    escapes TOML shares; TOML also forbids a raw DEL (U+007F)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def cmd_token_create(role: str, user_id: int | None, name: str | None) -> int:
    token = new_token()
    label = name or (f"user-{user_id}" if role == "user" else role)
    lines = ["[[auth.tokens]]", f"name = {_toml_str(label)}", f'role = "{role}"']
    if user_id is not None:
        lines.append(f"user_id = {user_id}")
    lines.append(f'sha256 = "{digest(token)}"')
    print(token)
    print()
    print("# Add to collector.toml; the token above is not stored anywhere and is shown only once.")
    print("\n".join(lines))
    return 0


def cmd_serve(path: str) -> int:
    try:
        cfg = config_mod.load(path)
        geo = geoip.load(cfg.geoip.path)  # a bad GeoIP file is a config error too
    except ConfigError as exc:  # one log event, like every other line in the journal
        setup_logging("info")
        log.error("config error, not starting", extra=kv(config=path, error=str(exc)))
        return EXIT_CONFIG
    setup_logging(cfg.server.log_level)
    with asyncio.Runner(loop_factory=eventloop.loop_factory()) as runner:
        return runner.run(serve(path, cfg, geo))


def reload(app: web.Application, path: str) -> bool:
    state = app[STATE]
    sdnotify.notify(sdnotify.RELOADING)
    try:
        new = config_mod.load(path)
        geo = geoip.load(new.geoip.path)
    except ConfigError as exc:
        state.metrics.reloads.inc(1, RELOAD_REFUSED)
        log.error("config reload refused; keeping the running config", extra=kv(path=path, error=str(exc)))
        sdnotify.notify(sdnotify.READY)
        return False
    old = state.config
    if (new.server.listen, new.storage) != (old.server.listen, old.storage):
        log.warning("listen/storage changes need a restart; applying tokens, limits and log level only")
    state.apply_config(new, geo)
    set_log_level(new.server.log_level)
    state.metrics.reloads.inc(1, RELOAD_APPLIED)
    log.info("config reloaded", extra=kv(path=path, tokens=len(new.auth.tokens), log_level=new.server.log_level))
    sdnotify.notify(sdnotify.READY)
    return True


async def serve(path: str, cfg: config_mod.CollectorConfig, geo: geoip.CountryTable | None = None) -> int:
    app = create_app(cfg, geo=geo)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=cfg.server.shutdown_timeout)
    host, port = config_mod.split_listen(cfg.server.listen)
    try:
        await runner.setup()  # opens the store (cleanup_ctx)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except (OSError, StoreError) as exc:
        log.error("cannot start", extra=kv(listen=cfg.server.listen, store=cfg.storage.path, error=str(exc)))
        await runner.cleanup()
        return 1
    addresses = " ".join(f"{a[0]}:{a[1]}" for a in runner.addresses)
    log.info("listening", extra=kv(address=addresses, store=cfg.storage.path, loop=eventloop.loop_name()))
    gcsettings.settle()  # start-up is done: see agent.wire.gcsettings
    sdnotify.notify(sdnotify.READY)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, app, path)
    watchdog: asyncio.Task[None] | None = None
    interval = sdnotify.watchdog_interval()
    if interval is not None:
        watchdog = asyncio.create_task(sdnotify.watchdog_loop(interval))
    try:
        await stop.wait()
    finally:
        sdnotify.notify(sdnotify.STOPPING)
        log.info("stopping")
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await runner.cleanup()
        log.info("stopped")
    return 0
