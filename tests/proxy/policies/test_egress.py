"""Forward proxy choice, NO_PROXY matching and the happy-eyeballs address order."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.policies import egress


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypass"),
    [
        ("*", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),
        (".openai.com", "api.openai.com", 443, True),
        ("*.openai.com", "api.openai.com", 443, True),
        ("openai.com", "openai.com", 443, True),
        ("openai.com", "notopenai.com", 443, False),
        ("OpenAI.COM", "api.openai.com.", 443, True),
        ("openai.com:443", "api.openai.com", 443, True),
        ("openai.com:8443", "api.openai.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),
        ("fd00::/8", "[fd00::5]", 443, True),
        ("fd00::/8", "fd00::5", 443, True),
        ("::1", "[::1]", 443, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 443, False),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1", "localhost", 80, False),
        ("a.example, b.example  c.example", "c.example", 443, True),
        ("", "api.openai.com", 443, False),
        (",, ,", "api.openai.com", 443, False),
        ("not/a/cidr", "10.0.0.1", 443, False),
    ],
)
def test_no_proxy_entries(no_proxy: str, host: str, port: int, bypass: bool) -> None:
    assert egress.bypasses(no_proxy, host, port) is bypass


def test_choose_takes_the_proxy_of_the_scheme_unless_no_proxy_names_the_host() -> None:
    settings = egress.ProxySettings("http://s:3128", "http://p:3128", "internal.example")
    assert egress.choose(settings, "https", "api.openai.com", 443) == "http://s:3128"
    assert egress.choose(settings, "http", "api.openai.com", 80) == "http://p:3128"
    assert egress.choose(settings, "https", "llm.internal.example", 443) is None
    assert egress.choose(egress.ProxySettings(), "https", "api.openai.com", 443) is None


def test_the_environment_is_read_upper_case_first() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1", "no_proxy": "x"}
    assert egress.ProxySettings.from_environment(env) == egress.ProxySettings("http://upper:1", "", "x")


def test_a_proxy_url_splits_into_address_and_credentials_and_shows_no_password() -> None:
    address = egress.parse_proxy("http://us%40er:p%3Ass@proxy.corp:3128")
    assert (address.host, address.port, address.username, address.password) == (
        "proxy.corp",
        3128,
        "us@er",
        "p:ss",
    )
    assert address.shown == "proxy.corp:3128"
    assert "p:ss" not in repr(address)
    assert egress.parse_proxy("proxy.corp:8080").port == 8080
    assert egress.parse_proxy("http://[fd00::1]").shown == "[fd00::1]:80"


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret-pw@proxy:3128",
        "socks5://user:secret-pw@proxy:1080",
        "http://user:secret-pw@",
        "http://user:secret-pw@proxy:3128/path",
        "http://user:secret-pw@proxy:99999",
    ],
)
def test_an_unusable_proxy_url_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(egress.ProxyUrlError) as caught:
        egress.parse_proxy(url)
    assert "secret-pw" not in str(caught.value)


V6, V4 = socket.AF_INET6, socket.AF_INET


def test_interleave_alternates_families_starting_with_the_first() -> None:
    found = [(V6, "a"), (V6, "b"), (V6, "c"), (V4, "1"), (V4, "2")]
    assert egress.interleave(found) == [(V6, "a"), (V4, "1"), (V6, "b"), (V4, "2"), (V6, "c")]
    assert egress.interleave([(V4, "1"), (V6, "a"), (V6, "b")]) == [(V4, "1"), (V6, "a"), (V6, "b")]
    assert egress.interleave([]) == []


addresses = st.lists(st.tuples(st.sampled_from([V4, V6]), st.integers(0, 20)), max_size=30)


@given(addresses)
def test_interleave_is_an_order_of_the_distinct_addresses(found: list[tuple[int, int]]) -> None:
    ordered = egress.interleave(found)
    assert sorted(ordered) == sorted(set(found))
    if found:
        assert ordered[0] == found[0]
    for family in (V4, V6):  # each family keeps the resolver's order
        mine = [a for a in ordered if a[0] == family]
        first_seen = list(dict.fromkeys(a for a in found if a[0] == family))
        assert mine == first_seen


@given(addresses)
def test_interleave_never_puts_two_of_a_family_together_while_the_other_has_some_left(
    found: list[tuple[int, int]],
) -> None:
    ordered = egress.interleave(found)
    for i in range(1, len(ordered)):
        if ordered[i][0] == ordered[i - 1][0]:
            assert all(a[0] == ordered[i][0] for a in ordered[i:])  # the other family ran out
