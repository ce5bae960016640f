"""agent.activity: Record -> wire Activity, the limits, and deterministic sampling.

Expected Activity objects are written out field by field from the documented mapping,
not computed with the module's helpers.
"""

from __future__ import annotations

import dataclasses
import zlib

import pytest

from agent.activity import ActivityLog, ActivitySettings, sampled_in, to_activity
from agent.record import Record
from agent.wire.batch import ACTIVITY_FIELDS, Activity, Batch, decode_body, encode_json, encode_msgpack


def record(**kw: object) -> Record:
    base: dict[str, object] = dict(
        start_ms=1_795_333_267_348, duration_ms=1500, bytes_sent=120, bytes_received=4567,
        client_ip="10.0.0.1", user="alice", host="www.example.co.uk", port=443, protocol="HTTPS",
        ip_out="192.0.2.7", listen_port=3128, domain="example.co.uk", user_id=7, order_id=3,
    )
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def test_a_connect_tunnel_is_http_with_every_logged_field() -> None:
    rec = record(start_us_rem=448, target_ip="203.0.113.9", proxy_port=40123, listen_address="192.0.2.1",
                 handshake_ms=12, tunnel_ms=1488)
    assert to_activity(rec, "w1") == Activity(
        ts_us=1_795_333_267_348_448, protocol="http", duration_ms=1500, handshake_ms=12, tunnel_ms=1488,
        error="", auth_username="alice", proxy_address="192.0.2.7", client_address="10.0.0.1",
        ip_address="203.0.113.9", hostname="www.example.co.uk", domain="example.co.uk", port=443,
        proxy_port=40123, listen_address="192.0.2.1", listen_port=3128, user_id=7, order_id=3, worker="w1",
        bytes_sent=120, bytes_received=4567,
    )


@pytest.mark.parametrize("protocol,wire", [("HTTP", "http"), ("HTTPS", "http"), ("SOCKS", "socks")])
def test_protocols(protocol: str, wire: str) -> None:
    assert to_activity(record(protocol=protocol), "w").protocol == wire


def test_what_the_log_does_not_hold_is_null() -> None:
    rec = Record(start_ms=5, duration_ms=0, bytes_sent=0, bytes_received=0, client_ip="", user="", host="",
                 port=0, protocol="SOCKS", error="auth_failed")
    assert to_activity(rec, "w") == Activity(
        ts_us=5000, protocol="socks", duration_ms=0, handshake_ms=None, tunnel_ms=None, error="auth_failed",
        auth_username=None, proxy_address=None, client_address="", ip_address=None, hostname=None,
        domain=None, port=None, proxy_port=None, listen_address=None, listen_port=None, user_id=0,
        order_id=0, worker="w", bytes_sent=0, bytes_received=0,
    )


@pytest.mark.parametrize("host,domain,target_ip,want", [
    # an IP literal target: no host name, no domain; the literal is the target's IP
    ("127.0.0.1", "127.0.0.1", "", (None, "127.0.0.1", None)),
    ("2001:db8::1", "2001:db8::1", "", (None, "2001:db8::1", None)),
    # a name the proxy resolved (squid's %<a, haproxy's %si, ...)
    ("a.example.com", "example.com", "198.51.100.4", ("a.example.com", "198.51.100.4", "example.com")),
    # a name it never resolved (a DNS failure): no IP
    ("nosuch.invalid", "nosuch.invalid", "", ("nosuch.invalid", None, "nosuch.invalid")),
])
def test_hostname_against_ip_address(host: str, domain: str, target_ip: str, want: tuple[object, ...]) -> None:
    a = to_activity(record(host=host, domain=domain, target_ip=target_ip), "w")
    assert (a.hostname, a.ip_address, a.domain) == want


def test_values_over_the_wire_limits_are_fitted_and_counted() -> None:
    log = ActivityLog("w")
    log.add(record(user="u" * 300, port=70000, handshake_ms=2**53, user_id=2**63))
    (a,) = log.drain()
    assert (a.auth_username, a.port, a.handshake_ms, a.user_id) == ("u" * 255, None, None, 0)
    assert log.fixed == 4
    # the record the wire refuses nothing of: it encodes and decodes back unchanged
    body = encode_msgpack(Batch(activity=[a]))
    assert decode_body(body, "application/msgpack").activity == [a]


def test_encoded_in_both_wire_forms_with_every_field() -> None:
    a = to_activity(record(start_us_rem=1), "w")
    for body, ctype in ((encode_msgpack(Batch(activity=[a])), "application/msgpack"),
                        (encode_json(Batch(activity=[a])), "application/json")):
        assert decode_body(body, ctype).activity == [a]
    assert [f.name for f in dataclasses.fields(Activity)] == list(ACTIVITY_FIELDS)


def _many(n: int) -> list[Record]:
    return [record(start_ms=1_795_333_267_000 + 37 * i, client_ip=f"10.0.{i % 7}.{i % 251}", bytes_received=i)
            for i in range(n)]


def test_sampling_is_deterministic_nested_and_near_the_rate() -> None:
    recs = _many(20_000)
    kept: dict[float, list[int]] = {}
    for rate in (0.1, 0.25, 0.5, 1.0):
        log = ActivityLog("w", ActivitySettings(sample_rate=rate))
        for r in recs:
            log.add(r)
        got = log.drain()
        assert log.kept == len(got) and log.kept + log.sampled_out == len(recs)  # nothing unaccounted
        kept[rate] = [a.bytes_received for a in got]  # bytes_received = the record's index
        # the same records give the same answer in a fresh log (no clock, no arrival order)
        again = ActivityLog("w", ActivitySettings(sample_rate=rate))
        for r in reversed(recs):
            again.add(r)
        assert sorted(a.bytes_received for a in again.drain()) == kept[rate]
        assert abs(len(got) - rate * len(recs)) <= 0.02 * len(recs), (rate, len(got))
    assert kept[1.0] == list(range(len(recs)))
    # a record kept at a lower rate is kept at every higher one (one threshold on one hash)
    assert set(kept[0.1]) <= set(kept[0.25]) <= set(kept[0.5])


def test_sampled_in_agrees_with_the_log() -> None:
    recs = _many(2000)
    log = ActivityLog("w", ActivitySettings(sample_rate=0.3))
    for r in recs:
        log.add(r)
    assert [a.bytes_received for a in log.drain()] == [r.bytes_received for r in recs if sampled_in(r, 0.3)]


def test_the_sample_key_depends_on_the_request() -> None:
    """Two requests that differ only in their microseconds or their client are decided
    independently: over many such pairs both answers occur."""
    a = [sampled_in(record(start_us_rem=u), 0.5) for u in range(200)]
    assert 20 < sum(a) < 180
    assert zlib.crc32(b"") == 0  # the hash is the standard CRC-32 (stable across Python runs)


def test_disabled_counts_and_keeps_nothing() -> None:
    log = ActivityLog("w", ActivitySettings(enabled=False))
    for r in _many(10):
        log.add(r)
    assert (log.pending, log.disabled, log.kept, log.drain()) == (0, 10, 0, [])


def test_full_at_max_records_per_batch() -> None:
    log = ActivityLog("w", ActivitySettings(max_records_per_batch=3))
    for i, r in enumerate(_many(3)):
        assert not log.full, i
        log.add(r)
    assert log.full and log.pending == 3
    assert len(log.drain()) == 3 and not log.full


@pytest.mark.parametrize("settings", [ActivitySettings(sample_rate=0.0), ActivitySettings(sample_rate=1.5),
                                      ActivitySettings(max_records_per_batch=0)])
def test_bad_settings_are_refused(settings: ActivitySettings) -> None:
    with pytest.raises(ValueError):
        ActivityLog("w", settings)


def test_the_log_converts_like_to_activity_on_real_lines() -> None:
    """ActivityLog's per-line shortcut gives what the reference to_activity gives, on
    every captured line of every format (enriched as the agent does)."""
    from datetime import timezone
    from pathlib import Path

    from agent.domains import DomainResolver
    from agent.enrich import Enricher
    from agent.parsers import make_parser
    from agent.users import UserMapper, UsersConfig

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
    enricher = Enricher(UserMapper(UsersConfig()), DomainResolver.load(None))
    recs: list[Record] = []
    for fmt in ("squid", "haproxy", "nginx", "dante", "jsonl"):
        for path in sorted((fixtures / fmt).glob("*.log")):
            parser = make_parser(fmt, timezone.utc)
            for line in path.read_bytes().splitlines():
                try:
                    rec = parser.parse(line)
                except ValueError:
                    continue
                if rec is not None:
                    enricher.enrich(rec)
                    recs.append(rec)
    assert len(recs) > 80
    log = ActivityLog("w")
    for r in recs:
        log.add(r)
    assert log.drain() == [to_activity(r, "w") for r in recs]


def test_drained_tuples_encode_like_activity_objects() -> None:
    """ActivityLog.drain hands back tuples (ActivityRecords); encoded as they are, the
    body is byte for byte the one of the same records as Activity objects, and reading
    them gives those objects."""
    import msgpack

    from agent.wire.compact import ActivityRecords, batch_from_columns, encode_compact

    # the common shapes, and one over the wire's limits (the fitted path)
    recs = [record(start_ms=1_767_225_600_000 + i * 7, host=h, user=u, bytes_received=i)
            for i, (h, u) in enumerate([("a.example.com", "bob"), ("10.0.0.1", ""), ("", "x y"),
                                        ("b.example.org", "u" * 300)] * 3)]
    log = ActivityLog("w")
    for r in recs:
        log.add(r)
    drained = log.drain()
    assert isinstance(drained, ActivityRecords) and drained.untouched and len(drained) == len(recs)
    expected = [to_activity(r, "w") for r in recs]
    body = encode_compact(Batch(activity=drained))
    assert drained.untouched  # the encoder read the tuples, made no Activity
    assert body == encode_compact(Batch(activity=expected))
    assert batch_from_columns(msgpack.unpackb(body)).activity == expected
    assert list(drained) == expected and drained[3] == expected[3] and not drained.untouched
