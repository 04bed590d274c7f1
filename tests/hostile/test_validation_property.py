"""Properties of the pure write-time validation (proxy.validation)."""

from __future__ import annotations

import re
from bisect import bisect_left
from datetime import datetime, timedelta

from dateutil import rrule as dateutil_rrule
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import LimitsSettings
from proxy.validation import DENSITY_WINDOW, Frequency, _longest_property, dense_rule, rule_problem

START = datetime(2026, 12, 1, 9, 0)
LIMITS = LimitsSettings()

rules = st.builds(
    lambda freq, interval, hours, minutes, month, end: (
        f"FREQ={freq.name};INTERVAL={interval}"
        + (f";BYHOUR={','.join(map(str, sorted(hours)))}" if hours else "")
        + (f";BYMINUTE={','.join(map(str, sorted(minutes)))}" if minutes else "")
        + (f";BYMONTH={month}" if month else "")
        + end
    ),
    st.sampled_from([Frequency.HOURLY, Frequency.DAILY, Frequency.WEEKLY, Frequency.MONTHLY, Frequency.YEARLY]),
    st.integers(1, 2),
    st.sets(st.integers(0, 23), max_size=12),
    st.sets(st.integers(0, 59), max_size=6),
    st.sampled_from([None, 3, 12]),
    st.sampled_from(["", ";COUNT=500", ";UNTIL=20271215T000000"]),
)


@settings(max_examples=60, deadline=None)
@given(rules, st.integers(5, 400))
def test_dense_rule_agrees_with_brute_force(rule, cap):
    """Brute force: the most instances in any 28 days over two years (interval ≤ 4 years is one cycle)."""
    try:
        parsed = dateutil_rrule.rrulestr(rule, dtstart=START)
        # Every instance within two years and a window, then the most that fall in any 28 days.
        instances = list(parsed.between(START, START + timedelta(days=2 * 366) + DENSITY_WINDOW, inc=True))
    except ValueError:  # a rule whose BY* parts can never match (e.g. INTERVAL=2;BYHOUR=1 from 09:00): no instance
        instances = []
    brute = max((bisect_left(instances, at + DENSITY_WINDOW) - n for n, at in enumerate(instances)), default=0)
    assert dense_rule(rule, START, cap) == (brute > cap)


@given(st.sampled_from([Frequency.SECONDLY, Frequency.MINUTELY]), st.integers(1, 1000),
       st.sampled_from(["", ";COUNT=3", ";UNTIL=20261201T090500Z"]))
def test_every_rule_below_the_floor_is_refused(freq, interval, end):
    problem = rule_problem(f"FREQ={freq.name};INTERVAL={interval}{end}", START, LIMITS, 20_000)
    assert problem is not None and "limits.min_frequency" in problem


@given(st.integers(20_001, 10**40))
def test_absurd_counts_are_refused(count):
    problem = rule_problem(f"FREQ=YEARLY;COUNT={count}", START, LIMITS, 20_000)
    assert problem is not None and "COUNT" in problem


@given(st.sampled_from(list(Frequency)[2:]), st.integers(1, 100))
def test_plain_rules_at_or_above_the_floor_are_accepted(freq, interval):
    assert rule_problem(f"FREQ={freq.name};INTERVAL={interval}", START, LIMITS, 20_000) is None
    assert not dense_rule(f"FREQ={freq.name};INTERVAL={interval}", START + timedelta(days=1), 3000)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text("ab:;", min_size=1, max_size=30), st.lists(st.text("ab ", max_size=20),
                                                                              max_size=3),
                          st.sampled_from(["\r\n", "\n"]), st.sampled_from([" ", "\t"])), min_size=1, max_size=8))
def test_longest_property_is_the_longest_unfolded_line(lines):
    """Against RFC 5545's unfolding done the obvious way: remove every line break followed by a space or tab."""
    body = "".join(first + "".join(f"{end}{blank}{more}" for more in continued) + end
                   for first, continued, end, blank in lines).encode()
    unfolded = re.sub(rb"\r?\n[ \t]", b"", body)
    assert _longest_property(body) == max(len(line.rstrip(b"\r")) for line in unfolded.split(b"\n"))
