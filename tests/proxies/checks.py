"""Compare what the collector reports with what the client recorded.

Each proxy test supplies `bounds(sent) -> ((sent_lo, sent_hi), (recv_lo, recv_hi))`: the
bytes the proxy must have logged for that request in each direction, as an exact value
(lo == hi) where its log is exact and as the README's documented bound where it is not.
Requests, errors by code and the burst/long-tunnel peaks are always exact.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.proxies.client import Sent, Truth, peak as client_peak
from tests.proxies.stack import Api, user_id_of

Range = tuple[int, int]
Bounds = Callable[[Sent], tuple[Range, Range]]


def check_all(api: Api, truth: Truth, bounds: Bounds, *, peaks: dict[str, int], logs: str = "") -> None:
    """peaks: user name -> the exact peak concurrency the collector must report; every
    other user's peak must lie within 1..its number of requests."""
    failures: list[str] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            failures.append(what)

    for name in sorted({s.user for s in truth.sent}):
        sent = truth.by_user(name)
        uid = user_id_of(name)
        count, errors = api.requests(uid)
        want_errors = sum(1 for s in sent if s.error)
        expect(count == len(sent), f"user {name!r} (id {uid}): requests {count}, client made {len(sent)}")
        expect(errors == want_errors, f"user {name!r} (id {uid}): errors {errors}, expected {want_errors}")
        want_codes: dict[str, int] = {}
        for s in sent:
            if s.error:
                want_codes[s.error] = want_codes.get(s.error, 0) + 1
        got_codes = api.errors(uid)
        expect(got_codes == want_codes, f"user {name!r}: errors by code {got_codes}, expected {want_codes}")
        up, down = api.traffic(uid)
        b = [bounds(s) for s in sent]
        up_lo, up_hi = sum(x[0][0] for x in b), sum(x[0][1] for x in b)
        dn_lo, dn_hi = sum(x[1][0] for x in b), sum(x[1][1] for x in b)
        expect(up_lo <= up <= up_hi, f"user {name!r}: bytes_sent {up}, expected {up_lo}..{up_hi}")
        expect(dn_lo <= down <= dn_hi, f"user {name!r}: bytes_received {down}, expected {dn_lo}..{dn_hi}")
        peak = api.peak(uid)
        if name in peaks:
            # the client's own clock must agree first, or the traffic did not go as planned
            seen = client_peak([(s.start, s.end) for s in sent])
            expect(seen == peaks[name], f"user {name!r}: the client itself saw a peak of {seen}, planned {peaks[name]}")
            expect(peak == peaks[name], f"user {name!r}: peak concurrency {peak}, expected {peaks[name]}")
        else:
            expect(1 <= peak <= len(sent), f"user {name!r}: peak {peak} outside 1..{len(sent)}")

    got_errors = api.errors()
    expect(got_errors == truth.errors(), f"errors by code {got_errors}, expected {truth.errors()}")
    if failures:
        detail = "\n".join(f"  {s}" for s in truth.sent)
        raise AssertionError("collector disagrees with the client:\n" + "\n".join(failures)
                             + f"\nclient truth:\n{detail}\n{logs[-6000:]}")
