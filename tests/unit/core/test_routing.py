"""core.routing: which routes take an event name, renames, and the rules' own checks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.event import Event, Source
from gateway.core.eventschema import _NAME_RE
from gateway.core.routing import (
    EVENT_NAME,
    NO_RULES,
    RouteRules,
    RouteTable,
    check_rules,
    renamed,
    with_default_sources,
)


def event(name: str) -> Event:
    return Event(event=name, event_id="e-1", time=1_790_000_000, source=Source.WEBSITE)


class TestRules:
    def test_no_rules_take_everything_under_its_own_name(self) -> None:
        assert not NO_RULES.filters
        assert NO_RULES.takes("Purchase")
        assert NO_RULES.takes("order_paid")
        assert NO_RULES.rename("Purchase") == "Purchase"

    def test_include_list_takes_only_its_names(self) -> None:
        rules = RouteRules(events=("Purchase", "Lead"))
        assert rules.filters
        assert rules.takes("Purchase")
        assert rules.takes("Lead")
        assert not rules.takes("PageView")
        assert not rules.takes("purchase"), "names match exactly"

    def test_exclude_list_keeps_its_names_away(self) -> None:
        rules = RouteRules(exclude_events=("PageView",))
        assert not rules.takes("PageView")
        assert rules.takes("Purchase")
        assert rules.takes("my_custom")

    def test_custom_events_are_routed_by_their_own_name(self) -> None:
        rules = RouteRules(events=("order_paid",))
        assert rules.takes("order_paid")
        assert not rules.takes("Purchase")

    def test_rename_maps_canonical_and_custom_names(self) -> None:
        rules = RouteRules(event_names={"order_paid": "Purchase", "Lead": "SIGN_UP"})
        assert rules.rename("order_paid") == "Purchase"
        assert rules.rename("Lead") == "SIGN_UP"
        assert rules.rename("AddToCart") == "AddToCart"
        assert not rules.filters, "renames alone keep every event"


class TestRenamed:
    def test_only_the_name_changes(self) -> None:
        before = event("order_paid")
        after = renamed(before, {"order_paid": "Purchase"})
        assert after.event == "Purchase"
        assert after.event_id == before.event_id
        assert after.time == before.time

    def test_unmapped_events_are_the_same_object(self) -> None:
        before = event("AddToCart")
        assert renamed(before, {"order_paid": "Purchase"}) is before
        assert renamed(before, {}) is before
        assert renamed(before, {"AddToCart": "AddToCart"}) is before


class TestCheckRules:
    def test_good_rules_have_no_problem(self) -> None:
        rules = RouteRules(
            events=("Purchase", "order paid.v2"),
            exclude_events=("PageView",),
            event_names={"order paid.v2": "Purchase"},
        )
        assert check_rules(rules) == []

    def test_empty_include_list_is_refused(self) -> None:
        assert check_rules(RouteRules(events=())) == [
            ("events", "empty: leave the key out to send every event")
        ]

    def test_bad_and_duplicate_names_name_their_index(self) -> None:
        problems = dict(
            check_rules(RouteRules(events=("Purchase", "", "Purchase", "-x", "a" * 101)))
        )
        assert set(problems) == {"events[1]", "events[2]", "events[3]", "events[4]"}
        assert problems["events[1]"].startswith("expected an event name")
        assert problems["events[2]"] == "'Purchase' is listed twice"

    def test_a_name_both_included_and_excluded_is_refused(self) -> None:
        problems = check_rules(RouteRules(events=("Purchase", "Lead"), exclude_events=("Lead",)))
        assert problems == [
            ("exclude_events[0]", "'Lead' is also in events: list it in one of the two")
        ]

    def test_renames_of_events_that_never_arrive_and_bad_targets(self) -> None:
        rules = RouteRules(
            exclude_events=("PageView",),
            event_names={"PageView": "page", "Lead": " ", "bad name!": "x"},
        )
        problems = dict(check_rules(rules))
        assert problems["event_names.PageView"].startswith("'PageView' never reaches")
        assert problems["event_names.Lead"].startswith("expected a platform event name")
        assert problems["event_names.bad name!"].startswith("the key must be an event name")

    def test_names_follow_the_events_own_name_rule(self) -> None:
        assert EVENT_NAME.pattern == _NAME_RE.pattern.strip("^$")


class TestRouteTable:
    ROUTES = ("shop:meta", "shop:tiktok", "shop:snap")

    def table(self) -> RouteTable:
        return RouteTable(
            {
                "shop:meta": NO_RULES,
                "shop:tiktok": RouteRules(events=("Purchase", "AddToCart")),
                "shop:snap": RouteRules(exclude_events=("PageView",)),
            }
        )

    def test_each_name_gets_its_routes(self) -> None:
        table = self.table()
        assert table.filters
        assert table.route("Purchase", self.ROUTES).kept == self.ROUTES
        page = table.route("PageView", self.ROUTES)
        assert page.kept == ("shop:meta",)
        assert page.away == ("shop:tiktok", "shop:snap")
        lead = table.route("Lead", self.ROUTES)
        assert lead.kept == ("shop:meta", "shop:snap")
        assert lead.away == ("shop:tiktok",)

    def test_only_the_offered_routes_are_considered(self) -> None:
        table = self.table()
        only_tiktok = table.route("PageView", ("shop:tiktok",))
        assert only_tiktok.kept == ()
        assert only_tiktok.away == ("shop:tiktok",)

    def test_equal_answers_share_one_tuple(self) -> None:
        table = self.table()
        routes = self.ROUTES
        assert table.route("Purchase", routes).kept is routes
        assert table.route("Lead", routes).kept is table.route("Search", routes).kept

    def test_a_table_without_filters_says_so(self) -> None:
        table = RouteTable({"shop:meta": NO_RULES, "shop:x": RouteRules(event_names={"a": "b"})})
        assert not table.filters
        assert table.route("Anything", ("shop:meta", "shop:x")).kept == ("shop:meta", "shop:x")

    def test_the_memo_stays_bounded(self) -> None:
        table = self.table()
        for i in range(10_000):
            assert table.route(f"custom_{i}", self.ROUTES).away == ("shop:tiktok",)
        assert len(table._memo) <= 4096


NAMES = st.sampled_from(["Purchase", "PageView", "Lead", "order_paid", "quiz done"])
RULES = st.builds(
    RouteRules,
    events=st.none() | st.lists(NAMES, min_size=1, unique=True).map(tuple),
    exclude_events=st.lists(NAMES, unique=True).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(RULES, min_size=1, max_size=5), names=st.lists(NAMES, max_size=30))
def test_a_table_partitions_the_routes_as_the_rules_say(
    rules: list[RouteRules], names: list[str]
) -> None:
    routes = tuple(f"shop:d{i}" for i in range(len(rules)))
    table = RouteTable(dict(zip(routes, rules, strict=True)))
    for name in names:
        routed = table.route(name, routes)
        expected = tuple(r for r, rule in zip(routes, rules, strict=True) if rule.takes(name))
        assert routed.kept == expected
        assert set(routed.kept) | set(routed.away) == set(routes)
        assert not set(routed.kept) & set(routed.away)
        assert table.route(name, routes) is routed, "memoised"


class TestSources:
    def test_sources_keep_the_other_channels_away(self) -> None:
        rules = RouteRules(sources=("backend",))
        assert rules.filters
        assert rules.takes("Purchase", "api")
        assert not rules.takes("Purchase", "loader")
        assert not rules.takes("Purchase", "pixel")
        assert rules.takes("Purchase"), "without a channel only the name lists apply"
        both = RouteRules(sources=("loader", "pixel"), exclude_events=("Lead",))
        assert both.takes("Purchase", "pixel")
        assert both.takes("Purchase", "loader")
        assert not both.takes("Purchase", "api")
        assert not both.takes("Lead", "loader"), "the name lists still apply"

    def test_the_table_splits_by_channel_too(self) -> None:
        table = RouteTable({"s:ga4": RouteRules(sources=("backend",))})
        routes = ("s:meta", "s:ga4")
        assert table.route("Purchase", routes, "api").kept == routes
        loader = table.route("Purchase", routes, "loader")
        assert (loader.kept, loader.away) == (("s:meta",), ("s:ga4",))
        assert table.route("Purchase", routes).kept == routes, "the default channel is the API"

    def test_the_platform_default_applies_unless_the_site_sets_sources(self) -> None:
        assert with_default_sources(NO_RULES, ("backend",)).sources == ("backend",)
        mine = RouteRules(sources=("loader",))
        assert with_default_sources(mine, ("backend",)) is mine
        assert with_default_sources(NO_RULES, None) is NO_RULES

    def test_bad_sources_are_named(self) -> None:
        assert check_rules(RouteRules(sources=())) == [
            ("sources", "empty: leave the key out for the platform's default")
        ]
        assert check_rules(RouteRules(sources=("backend", "server"))) == [
            ("sources[1]", "expected one of backend, loader, pixel")
        ]
