"""Login slowdown keyed by (address, user name), with an address-wide bound against password sprays."""

from __future__ import annotations

import time

import requests

from proxy.keys import AUTHENTICATOR


def test_one_users_typos_do_not_slow_another_user_behind_the_same_address(calrelay_factory):
    server = calrelay_factory(overrides={"auth": {"failed_login_delay": 0.1, "max_failed_login_delay": 0.8}})
    authenticator = server.app[AUTHENTICATOR]
    for _ in range(5):
        response = requests.request("PROPFIND", server.url + "alice/", auth=("alice", "wrong"), timeout=30)
        assert response.status_code == 401
    assert authenticator.penalty("127.0.0.1", "alice") == 0.8
    assert authenticator.penalty("127.0.0.1", "bob") == 0.0
    started = time.monotonic()
    assert requests.request("PROPFIND", server.url + "bob/", auth=server.auth("bob"), timeout=30).ok
    assert time.monotonic() - started < 0.8  # bob is not held back by alice's penalty


def test_a_spray_of_names_slows_the_address_but_spares_known_good_names(calrelay_factory):
    server = calrelay_factory(overrides={"auth": {"failed_login_delay": 0.1, "max_failed_login_delay": 0.8}})
    authenticator = server.app[AUTHENTICATOR]
    assert requests.request("PROPFIND", server.url + "bob/", auth=server.auth("bob"), timeout=30).ok
    for number in range(authenticator.spray_threshold + 3):
        authenticator.record("127.0.0.1", f"guess-{number}", success=False)
    assert authenticator.penalty("127.0.0.1", "never-seen") > 0  # the spray slows every other name
    assert authenticator.penalty("127.0.0.1", "bob") == 0.0  # bob logged in from here: not slowed
    assert authenticator.penalty("10.9.9.9", "never-seen") == 0.0  # another address is not affected
