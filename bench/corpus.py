"""Benchmark input logs: realistic squid and jsonl files, and lines with a fixed key count.

- `write_file`: a seeded, realistic log of N lines from the project's shared generator
  `bench.loggen` (thousands of domains with Zipf popularity, hundreds of users, CONNECT
  and GET, proxy errors, long tunnels, squid's end-time order), cached under .bench/ by
  name and parameters: generation is not what is measured.
- `KeyedLines`: squid lines whose aggregation keys cycle over exactly K combinations, so
  a live benchmark controls "distinct keys per minute" (line i uses key i mod K; each key
  is a (user, domain) pair, the client address follows the user).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench import loggen

LOG_RATE = 2000.0  # lines per second of log time in replay files: a busy squid
N_DOMAINS = 5000
N_USERS = 200
TLDS = ("com", "net", "org", "io", "co.uk", "de", "com.br", "ru", "jp", "fr")


def user_name(uid: int, oid: int) -> str:
    """Proxy user name carrying user and order ids (what the default user pattern reads)."""
    return loggen.USER_FORMAT.format(user_id=uid, order_id=oid)


@dataclass(frozen=True)
class Population:
    domains: list[str]
    users: list[tuple[int, int, str]]  # (user_id, order_id, name)
    clients: list[str]  # one client address per user


def population(seed: int, n_domains: int = N_DOMAINS, n_users: int = N_USERS) -> Population:
    rnd = random.Random(seed)
    domains = [f"site{i}-{rnd.randrange(1 << 20):x}.{TLDS[i % len(TLDS)]}" for i in range(n_domains)]
    users = [(1000 + u, 1 + u % 37, user_name(1000 + u, 1 + u % 37)) for u in range(n_users)]
    clients = [f"10.{u // 250 % 256}.{u % 250}.{1 + u % 200}" for u in range(n_users)]
    return Population(domains, users, clients)


def write_file(path: Path, fmt: str, n_lines: int, seed: int = 1, rate: float = LOG_RATE) -> Path:
    """Write (or reuse) a realistic log of n_lines made by the shared generator."""
    done = path.with_suffix(path.suffix + ".done")
    stamp = f"{fmt} {n_lines} {seed} {rate}"
    if path.exists() and done.exists() and done.read_text() == stamp:
        return path
    tmp = path.with_suffix(".tmp")
    loggen.write_file(tmp, n_lines, seed=seed, rate=rate, fmt=fmt)
    tmp.replace(path)
    done.write_text(stamp)
    return path


class KeyedLines:
    """Squid lines whose aggregation keys cycle over exactly `keys` combinations."""

    def __init__(self, keys: int, seed: int = 7) -> None:
        pop = population(seed)
        self.keys = keys
        self.users = pop.users
        self.clients = pop.clients
        self.domains = pop.domains
        self.i = 0

    def line(self, end_ms: int) -> str:
        j = self.i % self.keys
        self.i += 1
        u = j % N_USERS
        d = (j // N_USERS) % N_DOMAINS
        _, _, name = self.users[u]
        dom = self.domains[d]
        if d % 2:
            return (f"{end_ms // 1000}.{end_ms % 1000:03d} {1000 + j % 5000:6d} {self.clients[u]} TCP_TUNNEL/200 "
                    f"{5000 + j % 90000} CONNECT www.{dom}:443 {name} HIER_DIRECT/93.184.216.34 -")
        return (f"{end_ms // 1000}.{end_ms % 1000:03d} {20 + j % 900:6d} {self.clients[u]} TCP_MISS/200 "
                f"{800 + j % 40000} GET http://www.{dom}/p/{j % 97} {name} HIER_DIRECT/93.184.216.34 text/html")

