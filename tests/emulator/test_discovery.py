"""Checklist 1–8 and 31: principal discovery, authentication, the partition host and response headers."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from defusedxml import ElementTree

from proxy.emulator import EmulatorServer
from tests.emulator.conftest import APPLE_ID, DSID, HOME, Dav, basic

PRINCIPAL = "<current-user-principal/>"


async def test_root_propfind_finds_the_relative_principal_in_icloud_xml_style(dav: Dav) -> None:  # 1
    reply = await dav.propfind("/", PRINCIPAL, partition=False)
    assert reply.status == 207
    assert reply.text.startswith('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    assert '<multistatus xmlns="DAV:">' in reply.text
    assert '<response xmlns="DAV:">' in reply.text
    assert "<href>/</href>" in reply.text
    assert f'<current-user-principal xmlns="DAV:"><href>/{DSID}/principal/</href>' in reply.text
    assert not re.search(r"</?[A-Za-z]+:[A-Za-z-]+[ >/]", reply.text), "no namespace prefixes"
    assert "\n\n" in reply.text


async def test_missing_or_wrong_credentials_get_an_empty_401_with_two_challenges(dav: Dav) -> None:  # 2
    for auth in (None, basic(password="wrong-pass-word-xxxx"), basic(user="nobody@icloud.test")):
        reply = await dav.request("PROPFIND", "/", "", auth=auth, partition=False, headers={"Depth": "0"})
        assert reply.status == 401
        assert reply.text == ""
        assert reply.headers["Content-Length"] == "0"
        assert reply.headers.getall("WWW-Authenticate") == [
            'Basic realm="MMCalDav"',
            'X-MobileMe-AuthToken realm="MMCalDav"',
        ]


async def test_only_app_specific_passwords_are_accepted_and_can_be_revoked(
    emulator: EmulatorServer, dav: Dav
) -> None:  # 3
    main_password = emulator.accounts[0].main_password
    assert main_password
    reply = await dav.request("PROPFIND", "/", "", auth=basic(password=main_password), partition=False)
    assert reply.status == 401
    assert (await dav.request("PROPFIND", "/", "", partition=False)).status == 207
    emulator.set_faults(revoke_app_passwords=True)
    assert (await dav.request("PROPFIND", "/", "", partition=False)).status == 401
    emulator.set_faults(revoke_app_passwords=False)
    assert (await dav.request("PROPFIND", "/", "", partition=False)).status == 207


async def test_home_set_is_an_absolute_url_on_the_partition_host_with_explicit_port(
    emulator: EmulatorServer, dav: Dav
) -> None:  # 4
    reply = await dav.propfind(f"/{DSID}/principal/", "<C:calendar-home-set/>", partition=False)
    assert reply.status == 207
    home = re.search(r"<calendar-home-set[^>]*><href[^>]*>([^<]+)</href>", reply.text)
    assert home
    url = urlsplit(home.group(1))
    discovery = urlsplit(emulator.discovery_url)
    assert url.scheme == "http" and url.port is not None and f":{url.port}/" in home.group(1)
    assert (url.hostname, url.port) != (discovery.hostname, discovery.port)
    assert url.port != discovery.port
    assert url.path == HOME


async def test_principal_reports_addresses_with_a_preferred_mailto(dav: Dav) -> None:  # 5
    reply = await dav.propfind(f"/{DSID}/principal/", "<C:calendar-user-address-set/>")
    root = ElementTree.fromstring(reply.text.encode())
    hrefs = root.findall(".//{urn:ietf:params:xml:ns:caldav}calendar-user-address-set/{DAV:}href")
    preferred = [h.text for h in hrefs if h.get("preferred") == "1"]
    assert preferred == [f"mailto:{APPLE_ID}"]
    assert hrefs[0].text != f"mailto:{APPLE_ID}", "the preferred address is not first in wire order"


async def test_home_paths_answer_on_the_partition_host_and_redirect_mode_works(
    emulator: EmulatorServer, dav: Dav
) -> None:  # 6
    on_partition = await dav.propfind(HOME, "<displayname/>", "<CS:getctag/>", depth="1")
    assert on_partition.status == 207
    # Like iCloud (by default): the discovery host does not serve calendar homes.
    assert (await dav.propfind(HOME, "<displayname/>", depth="0", partition=False)).status == 404
    emulator.options.update({"home_on_partition_only": False})
    on_discovery = await dav.propfind(HOME, "<displayname/>", "<CS:getctag/>", depth="1", partition=False)
    assert on_discovery.status == 207
    assert on_partition.text == on_discovery.text
    for status in (301, 302):
        emulator.options.update({"home_redirect": status})
        redirected = await dav.propfind(HOME, "<displayname/>", depth="0", partition=False)
        assert redirected.status == status
        location = redirected.headers["Location"]
        assert location == emulator.partition_url.rstrip("/") + HOME
        # A client that re-sends Authorization to the new host gets the home.
        followed = await dav.request("PROPFIND", location, "", headers={"Depth": "0"})
        assert followed.status == 207


async def test_well_known_answers_like_the_principal_or_redirects_and_apex_hosts_get_501(
    emulator: EmulatorServer, dav: Dav
) -> None:  # 7
    reply = await dav.propfind("/.well-known/caldav", PRINCIPAL, partition=False)
    assert reply.status == 207
    assert f"<href>/{DSID}/principal/</href>" in reply.text
    emulator.options.update({"well_known": "redirect"})
    redirect = await dav.propfind("/.well-known/caldav", PRINCIPAL, partition=False)
    assert redirect.status == 301 and redirect.headers["Location"] == "/"
    apex = await dav.request("PROPFIND", "/.well-known/caldav", "", partition=False, headers={"Host": "icloud.com"})
    assert apex.status == 501 and "Unsupported Request" in apex.text


async def test_double_slash_path_is_a_400_html_from_applehttpserver(dav: Dav) -> None:  # 8
    reply = await dav.request("PROPFIND", "//", "", partition=False)
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "AppleHttpServer" in reply.text


async def test_every_response_carries_apple_headers(dav: Dav) -> None:  # 31
    replies = [
        await dav.propfind("/", PRINCIPAL, partition=False),
        await dav.request("PROPFIND", "/", "", auth=None, partition=False),
        await dav.request("GET", f"{HOME}home/missing.ics"),
        await dav.request("PROPFIND", "//", "", partition=False),
    ]
    for reply in replies:
        assert re.fullmatch(r"AppleHttpServer/[0-9a-f]+", reply.headers["Server"])
        assert re.fullmatch(r"[0-9a-f-]{36}", reply.headers["X-Apple-Request-UUID"])
        assert reply.headers["x-apple-user-partition"] == "44"
