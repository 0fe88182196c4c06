"""When a mirror is due: a 5-field cron expression (croniter) or a plain ``interval``.

Due times are pure functions of the clock, so every replica computes the same ones; the run
key (mirror, due time) taken in the database decides which replica starts a run. Only the
latest due time counts: after downtime, missed runs run once, not once per miss.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from croniter import croniter

_INTERVAL = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
MIN_INTERVAL = 1.0


def parse_interval(text: str) -> float:
    """``15m``, ``1h30m``, ``45s``, ``2d`` or a number of seconds; at least one second."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        m = _INTERVAL.match(text)
        if not text or m is None:
            raise ValueError(f"invalid interval {text!r}: write e.g. 30s, 15m, 1h30m, 2d") from None
        d, h, mi, s = m.groups()
        seconds = int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
    if seconds < MIN_INTERVAL:
        raise ValueError(f"invalid interval {text!r}: at least {MIN_INTERVAL:g}s")
    return seconds


_SOME_DAY = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # any fixed day: a date that exists fires within 4 years


def check_cron(expr: str) -> str:
    """A 5-field cron expression that fires: ``0 0 31 2 *`` (February 31st) parses, but croniter finds no
    due time for it, and a stored one made every scheduler tick and ``GET /api/mirrors`` fail."""
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValueError(f"invalid schedule {expr!r}: expected a 5-field cron expression (min hour dom mon dow)")
    try:
        croniter(expr, _SOME_DAY).get_next(dt.datetime)
    except ValueError:  # CroniterBadDateError
        raise ValueError(f"invalid schedule {expr!r}: names a date that never comes (such as February 31st)") from None
    return expr


@dataclass(frozen=True)
class Schedule:
    cron: str | None = None
    interval: float | None = None

    @classmethod
    def of(cls, cron: str | None, interval: str | None) -> Schedule | None:
        if cron:
            return cls(cron=check_cron(cron))
        if interval:
            return cls(interval=parse_interval(interval))
        return None

    def latest_due(self, now: dt.datetime) -> dt.datetime:
        """The most recent due time at or before ``now`` (UTC)."""
        if self.interval is not None:
            ts = now.timestamp()
            return dt.datetime.fromtimestamp(ts - ts % self.interval, dt.UTC)
        assert self.cron is not None
        if croniter.match(self.cron, now.replace(second=0, microsecond=0)) and now.second == 0:
            return now.replace(microsecond=0)
        prev: dt.datetime = croniter(self.cron, now).get_prev(dt.datetime)
        return prev.astimezone(dt.UTC)

    def next_due(self, now: dt.datetime) -> dt.datetime:
        if self.interval is not None:
            return self.latest_due(now) + dt.timedelta(seconds=self.interval)
        assert self.cron is not None
        nxt: dt.datetime = croniter(self.cron, now).get_next(dt.datetime)
        return nxt.astimezone(dt.UTC)
