"""The pure balancing decision: properties over random clusters, and a few worked cases."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cluster.leases import plan, quota

instance_ids = st.lists(st.sampled_from([f"i{n}" for n in range(8)]), min_size=1, max_size=6, unique=True)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[str], list[str], dict[str, str | None]]:
    live = draw(instance_ids)
    links = [f"link-{n}" for n in range(draw(st.integers(0, 40)))]
    possible_holders = [*live, "dead-1", "dead-2", None]
    holders = {link: draw(st.sampled_from(possible_holders)) for link in links}
    return live, links, holders


def settle(
    live: list[str], links: list[str], holders: dict[str, str | None], order: list[int]
) -> tuple[dict[str, str | None], int]:
    """Every instance plans and acts in turn (acquire succeeds only on a link no live instance holds)."""
    holders = {link: (h if h in live else None) for link, h in holders.items()}
    for round_ in range(1, 6):
        changed = False
        for index in order:
            me = live[index % len(live)]
            decision = plan(me, live, links, holders)
            for link in decision.give_up:
                assert holders[link] == me
                holders[link] = None
                changed = True
            for link in decision.take:
                assert holders[link] not in live, "plan must never take a link a live instance holds"
                holders[link] = me
                changed = True
        if not changed:
            return holders, round_
    return holders, 6


@given(clusters(), st.lists(st.integers(0, 20), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_converges_to_an_even_spread(
    cluster: tuple[list[str], list[str], dict[str, str | None]], order: list[int]
) -> None:
    live, links, holders = cluster
    full_order = order + list(range(len(live)))  # every instance gets its turn in each round
    settled, rounds = settle(live, links, holders, full_order)
    assert rounds <= 3
    assert all(settled[link] in live for link in links), "every link held by a live instance"
    counts = Counter(settled[link] for link in links)
    loads = [counts.get(i, 0) for i in live]
    assert max(loads) - min(loads) <= 1
    assert all(counts[i] == quota(i, live, len(links)) for i in live)


@given(clusters())
@settings(max_examples=300, deadline=None)
def test_one_step_never_overshoots(cluster: tuple[list[str], list[str], dict[str, str | None]]) -> None:
    live, links, holders = cluster
    for me in live:
        decision = plan(me, live, links, holders)
        held = sum(1 for link in links if holders[link] == me)
        target = quota(me, live, len(links))
        assert not (decision.take and decision.give_up)
        assert held - len(decision.give_up) + len(decision.take) <= target
        assert len(decision.give_up) == max(0, held - target)
        assert set(decision.take).isdisjoint(link for link in links if holders[link] in live)


@given(instance_ids, st.integers(0, 1000))
def test_quotas_add_up(live: list[str], link_count: int) -> None:
    shares = [quota(i, live, link_count) for i in live]
    assert sum(shares) == link_count
    assert max(shares) - min(shares) <= 1


def test_a_dead_instances_links_are_taken_over() -> None:
    links = [f"l{n}" for n in range(6)]
    holders: dict[str, str | None] = {link: ("a" if n < 3 else "dead") for n, link in enumerate(links)}
    decision = plan("b", ["a", "b"], links, holders)
    assert sorted(decision.take) == ["l3", "l4", "l5"] and decision.give_up == ()


def test_a_new_instance_makes_others_give_links_up() -> None:
    links = [f"l{n}" for n in range(6)]
    holders: dict[str, str | None] = dict.fromkeys(links, "a")
    assert len(plan("a", ["a", "b", "c"], links, holders).give_up) == 4
    assert plan("c", ["a", "b", "c"], links, holders).take == ()  # nothing free yet: no stealing from the living
