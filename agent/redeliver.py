"""`proxymeter-agent redeliver`: resend the batches set aside in `spool/dead-letter/`.

A batch lands there when the collector answered a 4xx (a wrong token or role, a body over
its limit, a collector too old for the body). Once the cause is fixed, this resends each
one, oldest first, with its ORIGINAL Idempotency-Key, so a batch that was in fact applied
earlier is not applied twice. Rules:
- acknowledged -> its `.batch` and `.reason` files are deleted (the batch first: a crash
  in between leaves a stray `.reason`, which the next run removes);
- rejected again -> kept, its `.reason` rewritten with the new answer;
- the collector unreachable until `collector.once_timeout` -> kept; stop trying the rest.
It never touches the pending spool or the read positions (those were settled when the
batch was set aside), so it is safe while the agent runs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack

from agent import config as config_mod
from agent.shipper import Outcome, Shipper
from agent.spool import DEAD_LETTER_DIR, SPOOL_DIR, SUFFIX, write_atomic
from agent.wire.logfmt import kv

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REJECTED = 65  # as `run --once`: some batch was rejected again
EXIT_UNAVAILABLE = 75  # as `run --once`: the collector did not answer in time


@dataclass
class Summary:
    delivered: int = 0
    rejected: int = 0
    unsent: int = 0

    @property
    def exit_status(self) -> int:
        if self.unsent:
            return EXIT_UNAVAILABLE
        return EXIT_REJECTED if self.rejected else EXIT_OK


async def redeliver(cfg: config_mod.Config) -> Summary:
    dead_dir = Path(cfg.agent.state_dir) / SPOOL_DIR / DEAD_LETTER_DIR
    batches = sorted(dead_dir.glob("*" + SUFFIX)) if dead_dir.is_dir() else []
    for stray in dead_dir.glob("*.reason") if dead_dir.is_dir() else []:
        if not stray.with_suffix(SUFFIX).exists():
            stray.unlink()
    shipper = Shipper(
        cfg.collector.url,
        config_mod.token_of(cfg),
        request_timeout=cfg.collector.request_timeout,
        max_retry_delay=cfg.collector.max_retry_delay,
    )
    summary = Summary()
    deadline = time.monotonic() + cfg.collector.once_timeout
    try:
        for i, path in enumerate(batches):
            obj = msgpack.unpackb(path.read_bytes(), raw=False)
            key, body = obj["key"], obj["body"]
            answer = await shipper.deliver(key, body, deadline=deadline)
            if answer.outcome is Outcome.ACK:
                path.unlink()
                path.with_suffix(".reason").unlink(missing_ok=True)
                summary.delivered += 1
                log.info("dead-letter batch delivered",
                         extra=kv(key=key, file=path, rows=obj.get("rows"), activity=obj.get("activity", 0)))
            elif answer.outcome is Outcome.REJECT:
                info = {"key": key, "status": answer.status, "reason": answer.reason, "rows": obj.get("rows"),
                        "activity": obj.get("activity", 0)}
                write_atomic(path.with_suffix(".reason"), json.dumps(info).encode())
                summary.rejected += 1
                log.error("collector rejected the batch again",
                          extra=kv(key=key, status=answer.status, reason=answer.reason, file=path))
            else:
                summary.unsent = len(batches) - i
                log.error("collector unavailable; the rest stays in dead-letter",
                          extra=kv(status=answer.status, reason=answer.reason, left=summary.unsent))
                break
    finally:
        await shipper.close()
    log.info("redeliver finished", extra=kv(delivered=summary.delivered, rejected=summary.rejected,
                                            unsent=summary.unsent))
    return summary
