"""/metrics: Prometheus text parsed after a scripted CRM conversation; access per [metrics] configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics
from tests.operations.conftest import crm_conversation


def scrape(url: str, **kwargs) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(url + "metrics", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_match_the_conversation(linked):
    before = scrape(linked.url, auth=linked.relay.auth("crm"))
    conversation = crm_conversation(linked)
    after = scrape(linked.url, auth=linked.relay.auth("crm"))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("calrelay_relay_pushes_total", outcome="created") == 1
    assert delta("calrelay_relay_pushes_total", outcome="updated") == 1
    assert delta("calrelay_relay_pushes_total", outcome="deleted") == 1
    assert delta("calrelay_relay_pushes_total", outcome="skipped") == 2
    assert delta("calrelay_relay_imports_total", outcome="imported") == 1
    assert delta("calrelay_relay_imports_total", outcome="kept-deletion") == 1
    assert delta("calrelay_http_requests_total", kind="caldav", method="PUT", status="201") == 3
    assert delta("calrelay_http_requests_total", kind="caldav", method="PUT", status="204") == 1
    assert delta("calrelay_http_requests_total", kind="caldav", method="DELETE", status="204") + delta(
        "calrelay_http_requests_total", kind="caldav", method="DELETE", status="200") == conversation.deletes
    assert delta("calrelay_http_request_seconds_count", kind="caldav", method="PUT") == conversation.puts
    # The relay's own writes to iCloud: one create, one update, one delete answered 201, 204, 204.
    assert delta("calrelay_upstream_requests_total", method="PUT", status="201") >= 1
    assert delta("calrelay_upstream_requests_total", method="DELETE", status="204") >= 1
    assert delta("calrelay_upstream_request_seconds_count", method="PROPFIND") > 0
    assert delta("calrelay_relay_pulls_total", outcome="changed") >= 2
    assert value(after, "calrelay_links", state="connected") == 1
    assert value(after, "calrelay_links", state="needs-reconnect") == 0
    assert value(after, "calrelay_relay_pending_items") == 0
    assert value(after, "calrelay_relay_backing_off_links") == 0
    assert ("calrelay_database_pool_connections", (("state", "checked_out"),)) in after

    requests.get(linked.url + "api/v1/users/alice/availability", auth=linked.relay.auth("crm"), timeout=10,
                 params={"start": "2026-12-03T00:00:00Z", "end": "2026-12-04T00:00:00Z"}).raise_for_status()
    final = scrape(linked.url, auth=linked.relay.auth("crm"))
    assert value(final, "calrelay_availability_query_seconds_count") - value(
        after, "calrelay_availability_query_seconds_count") == 1


def test_access_service_accounts_by_default(calrelay):
    assert requests.get(calrelay.url + "metrics", timeout=10).status_code == 401
    assert requests.get(calrelay.url + "metrics", auth=calrelay.auth("alice"), timeout=10).status_code == 401
    assert requests.get(calrelay.url + "metrics", auth=("crm", "wrong"), timeout=10).status_code == 401
    assert "calrelay_http_requests_total" in requests.get(
        calrelay.url + "metrics", auth=calrelay.auth("crm"), timeout=10).text


def test_access_by_bearer_token(calrelay_factory):
    token = "s3cret-scraper-token-0123"
    server = calrelay_factory(overrides={"metrics": {"access": "token", "token": token}})
    assert requests.get(server.url + "metrics", timeout=10).status_code == 401
    assert requests.get(server.url + "metrics", auth=server.auth("crm"), timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert requests.get(server.url + "metrics", headers=wrong, timeout=10).status_code == 401
    scraped = scrape(server.url, headers={"Authorization": f"Bearer {token}"})
    assert any(name == "calrelay_links" for name, _ in scraped)


def test_access_off(calrelay_factory):
    server = calrelay_factory(overrides={"metrics": {"access": "off"}})
    assert requests.get(server.url + "metrics", auth=server.auth("crm"), timeout=10).status_code == 404


def test_two_apps_keep_their_own_counts(calrelay_factory):
    first, second = calrelay_factory(), calrelay_factory()
    for _ in range(3):
        requests.request("PROPFIND", first.url + "alice/", auth=first.auth("alice"), timeout=10,
                         headers={"Depth": "0"})
    a, b = scrape(first.url, auth=first.auth("crm")), scrape(second.url, auth=second.auth("crm"))
    assert value(a, "calrelay_http_requests_total", kind="caldav", method="PROPFIND", status="207") == 3
    assert value(b, "calrelay_http_requests_total", kind="caldav", method="PROPFIND", status="207") == 0


def test_grafana_dashboard_uses_only_metrics_calrelay_exports():
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"calrelay_[a-z_]+", target["expr"])}
    exported = set()
    for family in Metrics().registry.collect():
        exported |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    assert used and used <= exported, used - exported


def test_invented_methods_do_not_grow_the_labels(calrelay):
    # Methods the HTTP parser accepts but CalDAV has no use for (it refuses made-up ones itself, with 400).
    for method in ("SEARCH", "PURGE", "MKACTIVITY"):
        requests.request(method, calrelay.url + "alice/", auth=calrelay.auth("alice"), timeout=10)
    samples = scrape(calrelay.url, auth=calrelay.auth("crm"))
    methods = {dict(labels).get("method") for name, labels in samples if name == "calrelay_http_requests_total"}
    assert not methods & {"SEARCH", "PURGE", "MKACTIVITY"} and "other" in methods
