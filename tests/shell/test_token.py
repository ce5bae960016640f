"""`proxymeter-collector token create`: a new token, shown once, and only its SHA-256 stored.

The test computes the SHA-256 itself, pastes the printed block into a collector config
and uses the token against the running collector: a user token reads its own user_id
and nothing else.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from shellkit import Procs, cli, http, ingest_status, start_collector


def _create(*args: str) -> tuple[str, str]:
    proc = cli("collector", "token", "create", *args, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    token = lines[0].strip()
    block = "\n".join(lines[lines.index("[[auth.tokens]]"):])
    return token, block


def test_token_create_prints_a_token_and_its_hash_block() -> None:
    token, block = _create("--role", "user", "--user-id", "42", "--name", "customer-42")
    entry = tomllib.loads(block)["auth"]["tokens"][0]
    assert entry == {"name": "customer-42", "role": "user", "user_id": 42,
                     "sha256": hashlib.sha256(token.encode()).hexdigest()}
    assert token not in block
    assert len(token) >= 32  # enough randomness to face the internet
    other, _ = _create("--role", "user", "--user-id", "42", "--name", "customer-42")
    assert other != token


def test_token_create_quotes_any_name_as_toml() -> None:
    name = 'ops "night" \\ shift\nteam\t\u00e9\x7f'
    token, block = _create("--role", "admin", "--name", name)
    assert tomllib.loads(block)["auth"]["tokens"][0] == {
        "name": name, "role": "admin", "sha256": hashlib.sha256(token.encode()).hexdigest()}


def test_token_create_refuses_bad_arguments() -> None:
    assert cli("collector", "token", "create", "--role", "user", timeout=30).returncode == 2  # no --user-id
    assert cli("collector", "token", "create", "--role", "root", timeout=30).returncode == 2
    assert cli("collector", "token", "create", "--role", "admin", "--user-id", "3", timeout=30).returncode == 2


def test_created_tokens_authenticate_against_a_running_collector(tmp_path: Path, procs: Procs) -> None:
    user_token, user_block = _create("--role", "user", "--user-id", "7")
    admin_token, admin_block = _create("--role", "admin", "--name", "ops")
    entries = [tomllib.loads(b)["auth"]["tokens"][0] for b in (user_block, admin_block)]
    col = start_collector(procs, tmp_path, extra_tokens=entries)
    rng = "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    url = f"{col.base}/analytics/requests?{rng}"
    assert http(url, user_token)[0] == 200
    assert http(f"{url}&userId=7", user_token)[0] == 200
    assert http(f"{url}&userId=8", user_token)[0] == 403  # a user token sees its own user_id only
    assert http(f"{url}&userId=8", admin_token)[0] == 200
    assert http(url, user_token[:-1] + ("x" if user_token[-1] != "x" else "y"))[0] == 401
    # A read token may not ingest (right token, wrong role); the agent token may.
    assert ingest_status(col.base, user_token) == 403
    assert ingest_status(col.base, col.agent) == 204

