"""Compare a recorded response with the one received on replay (pure).

Statuses are compared exactly; bodies as multisets of normalised facts (see ``normalize``); of the headers,
only those that carry meaning for a CalDAV client: the media type, ETag (presence) and Location.

Variables (ETags, sync tokens, ctags, server-chosen hrefs) are *bound*: the first time a recorded value is
seen next to the value received at the same place, the pair goes into :class:`Bindings`, and from then on the
recorded value is replaced by the received one wherever a request quotes it (``If-Match``, a sync token in a
REPORT body). Their values are not compared; a value present on one side and absent on the other is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from proxy.replay.har import Message
from proxy.replay.normalize import BodyKind, Fact, VarKind, body_facts, media_type, strip_origin

#: Substituting very short strings would corrupt unrelated text (an ETag ``"1"`` inside a date, say).
_MIN_SUBSTITUTION_LENGTH = 4
#: A report that lists a hundred lines of one body helps nobody; the first ones locate the problem.
MAX_BODY_DIFFERENCES = 20


class DiffKind(StrEnum):
    STATUS = "status"
    HEADER = "header"
    BODY = "body"
    ERROR = "error"  # the request could not be completed


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DiffKind
    where: str
    expected: str | None
    actual: str | None

    def describe(self) -> str:
        if self.kind is DiffKind.ERROR:
            return f"error: {self.actual}"
        if self.expected is None:
            return f"{self.kind}: unexpected {self.where} = {self.actual!r}"
        if self.actual is None:
            return f"{self.kind}: missing {self.where} = {self.expected!r}"
        label = f"{self.kind} {self.where}" if self.where else str(self.kind)
        return f"{label}: expected {self.expected!r}, got {self.actual!r}"


@dataclass(slots=True)
class Bindings:
    """Recorded value → value received on replay, for every variable seen so far."""

    values: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, VarKind] = field(default_factory=dict)

    def bind(self, kind: VarKind, recorded: str, actual: str) -> None:
        if recorded and actual:
            self.values[recorded] = actual
            self.kinds[recorded] = kind

    def substitute(self, text: str) -> str:
        """``text`` with every bound recorded value replaced by its replay counterpart."""
        # Longest first, so that a value containing another (a token and its prefix) is replaced whole.
        for recorded in sorted(self.values, key=len, reverse=True):
            if len(recorded) >= _MIN_SUBSTITUTION_LENGTH and recorded in text:
                text = text.replace(recorded, self.values[recorded])
        return text

    def unsubstitute_hrefs(self, text: str) -> str:
        """Map server-chosen names received on replay back to the recorded ones, for comparison."""
        for recorded, actual in self.values.items():
            if self.kinds[recorded] is VarKind.HREF and actual in text:
                text = text.replace(actual, recorded)
        return text


def compare(
    recorded_status: int,
    recorded: Message,
    actual_status: int,
    actual: Message,
    bindings: Bindings,
) -> list[Difference]:
    """Differences between a recorded response and the received one; binds the variables it meets."""
    differences: list[Difference] = []
    if recorded_status != actual_status:
        differences.append(Difference(DiffKind.STATUS, "", str(recorded_status), str(actual_status)))
    differences.extend(_compare_headers(recorded, actual, bindings))
    if recorded.captured:
        differences.extend(_compare_bodies(recorded_status, recorded, actual_status, actual, bindings))
    return differences


def _compare_headers(recorded: Message, actual: Message, bindings: Bindings) -> list[Difference]:
    differences = []
    recorded_etag, actual_etag = recorded.header("ETag"), actual.header("ETag")
    if (recorded_etag is None) != (actual_etag is None):
        differences.append(Difference(DiffKind.HEADER, "ETag", recorded_etag, actual_etag))
    elif recorded_etag and actual_etag:
        bindings.bind(VarKind.ETAG, recorded_etag, actual_etag)

    recorded_location, actual_location = recorded.header("Location"), actual.header("Location")
    if (recorded_location is None) != (actual_location is None):
        differences.append(Difference(DiffKind.HEADER, "Location", recorded_location, actual_location))
    elif recorded_location and actual_location:
        recorded_path, actual_path = strip_origin(recorded_location), strip_origin(actual_location)
        if recorded_path != actual_path:
            bindings.bind(VarKind.HREF, recorded_path, actual_path)

    # A media type only means something when there is a body to describe.
    if recorded.body.strip() and actual.body.strip():
        recorded_type = media_type(recorded.header("Content-Type"))
        actual_type = media_type(actual.header("Content-Type"))
        if recorded_type != actual_type:
            differences.append(Difference(DiffKind.HEADER, "Content-Type", recorded_type, actual_type))
    return differences


def _compare_bodies(
    recorded_status: int, recorded: Message, actual_status: int, actual: Message, bindings: Bindings
) -> list[Difference]:
    recorded_kind, recorded_facts = body_facts(recorded.header("Content-Type"), recorded.body)
    actual_kind, actual_facts = body_facts(actual.header("Content-Type"), actual.body)
    # The prose of an error page ("Access forbidden.") differs between servers and says nothing the status
    # does not; structured error bodies (DAV preconditions in XML, the JSON API's errors) are compared.
    prose = (BodyKind.TEXT, BodyKind.EMPTY)
    if recorded_status >= 400 and actual_status >= 400 and recorded_kind in prose and actual_kind in prose:
        return []
    if recorded_kind is not actual_kind:
        return [
            Difference(
                DiffKind.BODY,
                "",
                _describe_body(recorded_kind, recorded.body),
                _describe_body(actual_kind, actual.body),
            )
        ]
    actual_facts = [
        Fact(bindings.unsubstitute_hrefs(fact.path), bindings.unsubstitute_hrefs(fact.value), fact.var)
        for fact in actual_facts
    ]
    _bind_variables(recorded_facts, actual_facts, bindings)
    return _diff_facts(_masked(recorded_facts), _masked(actual_facts))


def _describe_body(kind: BodyKind, body: bytes) -> str:
    return "empty" if kind is BodyKind.EMPTY else f"{kind} ({len(body)} bytes)"


def _bind_variables(recorded: list[Fact], actual: list[Fact], bindings: Bindings) -> None:
    """Pair variable facts by path (in document order when a path repeats) and bind them."""
    received: dict[str, list[Fact]] = defaultdict(list)
    for fact in actual:
        if fact.var is not None:
            received[fact.path].append(fact)
    for fact in recorded:
        if fact.var is not None and received[fact.path]:
            bindings.bind(fact.var, fact.value, received[fact.path].pop(0).value)


def _masked(facts: list[Fact]) -> list[Fact]:
    """Variables compared for presence: an empty ``<getetag/>`` is still different from a filled one."""
    return [Fact(f.path, f"<{f.var}>" if f.value else "") if f.var is not None else f for f in facts]


def _diff_facts(recorded: list[Fact], actual: list[Fact]) -> list[Difference]:
    missing = Counter(recorded) - Counter(actual)
    unexpected = Counter(actual) - Counter(recorded)
    extra_by_path: dict[str, list[Fact]] = defaultdict(list)
    for fact in _in_order(actual, unexpected):
        extra_by_path[fact.path].append(fact)
    differences = []
    for fact in _in_order(recorded, missing):
        # The same path on both sides reads better as one change than as a missing and an unexpected line.
        if extra_by_path[fact.path]:
            other = extra_by_path[fact.path].pop(0)
            differences.append(Difference(DiffKind.BODY, fact.path, fact.value, other.value))
        else:
            differences.append(Difference(DiffKind.BODY, fact.path, fact.value, None))
    for fact in _in_order(actual, unexpected):
        if fact in extra_by_path[fact.path]:
            extra_by_path[fact.path].remove(fact)
            differences.append(Difference(DiffKind.BODY, fact.path, None, fact.value))
    return differences


def _in_order(facts: list[Fact], wanted: Counter[Fact]) -> list[Fact]:
    """The facts counted in ``wanted``, in document order (so the report reads like the body)."""
    remaining = Counter(wanted)
    ordered = []
    for fact in facts:
        if remaining[fact] > 0:
            remaining[fact] -= 1
            ordered.append(fact)
    return ordered
