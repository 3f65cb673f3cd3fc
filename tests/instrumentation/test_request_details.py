"""The pure helpers behind request details: client IP, user resolution, error text, exclusions."""

from __future__ import annotations

import jwt

from homepot_foundation.tokens import unverified_subject as jwt_subject
from instrumentation.asgi import error_text
from instrumentation.client_ip import client_ip, parse_networks
from instrumentation.exclusions import ExcludedPaths
from instrumentation.users import default_user_resolver, user_resolver_for

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1"])


def test_forwarded_headers_are_ignored_unless_the_peer_is_a_trusted_proxy() -> None:
    spoofed = {"x-forwarded-for": "1.2.3.4"}
    assert client_ip("203.0.113.9", spoofed, TRUSTED) == "203.0.113.9"
    assert client_ip("203.0.113.9", spoofed, ()) == "203.0.113.9"


def test_the_nearest_untrusted_hop_is_the_client() -> None:
    # The client prepended a fake hop; the proxy chain appended the real one.
    headers = {"x-forwarded-for": "6.6.6.6, 198.51.100.4, 10.1.2.3"}
    assert client_ip("10.0.0.5", headers, TRUSTED) == "198.51.100.4"
    assert (
        client_ip("127.0.0.1", {"forwarded": 'for="[2001:db8::1]:4711";proto=https'}, TRUSTED)
        == "2001:db8::1"
    )
    assert client_ip("127.0.0.1", {"forwarded": "for=192.0.2.60:4711"}, TRUSTED) == "192.0.2.60"
    assert client_ip("127.0.0.1", {}, TRUSTED) == "127.0.0.1"


def _scope(token: str | None = None, state: dict[str, object] | None = None) -> dict[str, object]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return {"headers": headers, "state": state or {}}


def test_user_comes_from_request_state_then_from_the_bearer_subject() -> None:
    token = jwt.encode({"sub": "user123"}, "any-secret-any-secret-any-secret-x", "HS256")
    assert jwt_subject(token) == "user123"
    assert default_user_resolver(_scope(token), 200) == "user123"
    assert default_user_resolver(_scope(token, {"user_id": "u-state"}), 200) == "u-state"
    # A rejected (401) request's token names nobody: anyone can write a JWT.
    assert default_user_resolver(_scope(token), 401) is None
    assert default_user_resolver(_scope("not.a.jwt"), 200) is None
    assert default_user_resolver(_scope(), 200) is None


def _cookie_scope(cookie: str, token: str | None = None) -> dict[str, object]:
    headers = [(b"cookie", cookie.encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {"headers": headers, "state": {}}


def test_user_comes_from_the_session_cookie_first_as_homepot_reads_it() -> None:
    """HOMEPOT: an HS256 JWT in the httpOnly access_token cookie, the bearer header second."""
    secret = "any-secret-any-secret-any-secret-x"
    cookie_user = jwt.encode({"sub": "operator@homepot"}, secret, "HS256")
    bearer_user = jwt.encode({"sub": "api-client"}, secret, "HS256")
    cookies = f"theme=dark; access_token={cookie_user}; other=1"
    assert default_user_resolver(_cookie_scope(cookies), 200) == "operator@homepot"
    assert default_user_resolver(_cookie_scope(cookies, bearer_user), 200) == "operator@homepot"
    assert default_user_resolver(_cookie_scope("theme=dark", bearer_user), 200) == "api-client"
    # The header form stored in the cookie, and the same 401 rule as the bearer path.
    assert (
        default_user_resolver(_cookie_scope(f'access_token="Bearer {cookie_user}"'), 200)
        == "operator@homepot"
    )
    assert default_user_resolver(_cookie_scope(cookies), 401) is None
    assert default_user_resolver(_cookie_scope("access_token=garbage"), 200) is None
    # Another cookie name, or none at all.
    assert user_resolver_for("session")(_cookie_scope(f"session={cookie_user}"), 200) == "operator@homepot"
    assert user_resolver_for(None)(_cookie_scope(cookies), 200) is None


def test_error_text_of_fastapi_responses() -> None:
    assert error_text(b'{"detail":"Device not found"}') == "Device not found"
    validation = b'{"detail":[{"loc":["body","state"],"msg":"Input should be \'online\'"}]}'
    assert error_text(validation) == "body.state: Input should be 'online'"
    assert error_text(b"Internal Server Error") == "Internal Server Error"
    assert error_text(b"") is None


def test_excluded_paths_match_exactly_or_by_prefix() -> None:
    excluded = ExcludedPaths(["/health", "/static/*", "/"])
    assert "/health" in excluded
    assert "/health/" in excluded
    assert "/static/app.js" in excluded
    assert "/" in excluded
    assert "/api/health-report" not in excluded
    assert "/api/v1/health" not in excluded
    assert "/healthz" not in excluded
    assert not ExcludedPaths([])
