"""Auth that holds for a human-chosen key (issue 14, findings 6, 14 and the bearer part of 8),
end to end against a real `advisor serve`; the throttle's arithmetic and the secret file
also as units, with a fake clock.

Clients are told apart by the address uvicorn reports; uvicorn trusts X-Forwarded-For from
127.0.0.1 by default, so each test that spends failed attempts speaks as its own client and
does not lock the others out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service import KEY, Service, free_port_range

from advisor.errors import AdvisorError
from advisor.web.secret import server_secret
from advisor.web.throttle import Throttle

pytestmark = pytest.mark.slow

SESSION = "advisor-session"


@pytest.fixture(scope="module", name="svc")
def fx_svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("auth") / "home", free_port_range(2))
    yield svc
    svc.stop()


def browser(svc: Service, client_ip: str = "198.51.100.1", **headers: str) -> httpx.Client:
    """A client with no key, a cookie jar and an address of its own."""
    return httpx.Client(base_url=svc.url, timeout=30, follow_redirects=False,
                        headers={"X-Forwarded-For": client_ip, **headers})


def csrf_token(client: httpx.Client) -> str:
    client.get("/signin").raise_for_status()
    return client.cookies["csrftoken"]


def sign_in(client: httpx.Client, key: str = KEY) -> httpx.Response:
    return client.post("/signin", data={"_csrf_token": csrf_token(client), "key": key, "next": "/"})


def cookie_header(**cookies: str) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def logs(svc: Service, **cookies: str) -> int:
    """The status of a guarded read (an unknown id: 404 once past the guard, 401 before it)."""
    return httpx.get(f"{svc.url}/api/deployments/nope/logs", headers=cookie_header(**cookies),
                     timeout=30).status_code


def stop(svc: Service, token: str, **cookies: str) -> int:
    """The status of a guarded write through the API, with `token` as X-CSRFToken."""
    return httpx.delete(f"{svc.url}/api/deployments/nope", timeout=30,
                        headers={**cookie_header(**cookies), "X-CSRFToken": token}).status_code


# ----------------------------------------------------------------- finding 6: the secret


def test_the_csrf_secret_is_random_private_and_not_derived_from_the_key(svc: Service) -> None:
    secret_file = svc.home / "secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    with browser(svc) as client:
        token = csrf_token(client)
    nonce, mac = token[:64], token[64:]
    derived = hashlib.sha256(b"slm-advisor session " + KEY.encode()).digest().hex()
    assert hmac.new(derived.encode(), nonce.encode(), hashlib.sha256).hexdigest() != mac
    secret = secret_file.read_text().strip()
    assert KEY not in secret and len(bytes.fromhex(secret)) == 32
    assert hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest() == mac


# ----------------------------------------------------------------- finding 6: the throttle


def test_sign_in_locks_a_client_out_after_five_failures_even_for_the_right_key(svc: Service) -> None:
    with browser(svc, "203.0.113.6") as client:
        for _ in range(5):
            assert sign_in(client, "guess").status_code == 400
        sixth = sign_in(client, "guess")
        assert sixth.status_code == 429 and int(sixth.headers["retry-after"]) > 0
        assert "Too many failed sign-ins" in sixth.text
        right = sign_in(client)
        assert right.status_code == 429 and SESSION not in right.cookies
    # another client is not locked out by this one
    with browser(svc, "203.0.113.7") as other:
        assert sign_in(other).status_code == 303


def _locked_out_after_five_wrong_keys(svc: Service, path: str, address: str) -> httpx.Response:
    """Five wrong keys from one address (each a 401), then the right one: its answer."""
    def with_key(key: str) -> httpx.Response:
        return httpx.get(f"{svc.url}{path}", timeout=30,
                         headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": address})

    for _ in range(5):
        assert with_key("guess").status_code == 401
    locked = with_key(KEY)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    return locked


def test_wrong_bearer_keys_count_too(svc: Service) -> None:
    locked = _locked_out_after_five_wrong_keys(svc, "/api/deployments/nope/logs", "203.0.113.8")
    assert "Too many failed" in locked.json()["detail"]


def test_during_a_lock_out_v1_refuses_with_429_as_the_other_routes_do(svc: Service) -> None:
    locked = _locked_out_after_five_wrong_keys(svc, "/v1/models", "203.0.113.10")
    assert "Too many failed" in locked.json()["error"]["message"]


# ----------------------------------------------------------------- finding 14: sessions


def test_a_session_cookie_is_dead_after_sign_out(svc: Service) -> None:
    with browser(svc) as client:
        assert sign_in(client).status_code == 303
        session, token = client.cookies[SESSION], client.cookies["csrftoken"]
        assert logs(svc, **{SESSION: session, "csrftoken": token}) == 404  # signed in
        out = client.post("/signout", data={"_csrf_token": token})
        assert out.status_code == 303
    # the copied cookie replays nothing
    assert logs(svc, **{SESSION: session, "csrftoken": token}) == 401
    page = httpx.get(f"{svc.url}/", headers=cookie_header(**{SESSION: session, "csrftoken": token}))
    assert 'href="/signin"' in page.text and 'action="/signout"' not in page.text


def test_a_planted_session_id_is_not_the_one_signed_in(svc: Service) -> None:
    planted = "a" * 64
    with browser(svc) as client:
        client.cookies.set(SESSION, planted)
        signed = sign_in(client)
        assert signed.status_code == 303 and signed.cookies[SESSION] != planted
        token = signed.cookies["csrftoken"]
    assert logs(svc, **{SESSION: planted, "csrftoken": token}) == 401


def test_an_equal_cookie_and_header_pair_does_not_pass_csrf(svc: Service) -> None:
    with browser(svc) as client:
        assert sign_in(client).status_code == 303
        session, token = client.cookies[SESSION], client.cookies["csrftoken"]
    # the real token passes the guard (404: no such deployment)
    assert stop(svc, token, **{SESSION: session, "csrftoken": token}) == 404
    # a pair the attacker made up, or one the server signed for someone else, does not
    with browser(svc, "198.51.100.2") as stranger:
        signed_elsewhere = csrf_token(stranger)
    for forged in ("forged", signed_elsewhere):
        assert stop(svc, forged, **{SESSION: session, "csrftoken": forged}) == 401
        # nor through a form: the page sends the browser to sign in instead of stopping
        r = httpx.post(f"{svc.url}/deployments/nope/stop", data={"_csrf_token": forged},
                       headers=cookie_header(**{SESSION: session, "csrftoken": forged}))
        assert r.status_code in (303, 403), r.status_code
        assert r.status_code == 403 or r.headers["location"].startswith("/signin")
    # the right cookie with a made-up header is refused too
    assert stop(svc, "forged", **{SESSION: session, "csrftoken": token}) == 401


def test_cookies_are_secure_when_the_request_came_over_https(svc: Service) -> None:
    with browser(svc, "198.51.100.3", **{"X-Forwarded-Proto": "https"}) as client:
        page = client.get("/signin")
        assert "secure" in _attributes(page, "csrftoken")
        token = page.cookies["csrftoken"]
        signed = client.post("/signin", data={"_csrf_token": token, "key": KEY, "next": "/"},
                             headers={"Cookie": f"csrftoken={token}"})
        assert signed.status_code == 303
        assert "secure" in _attributes(signed, SESSION)
        assert "secure" in _attributes(signed, "csrftoken")
    with browser(svc, "198.51.100.4") as plain:  # plain http: no Secure, or the browser drops them
        assert "secure" not in _attributes(plain.get("/signin"), "csrftoken")
        assert "secure" not in _attributes(sign_in(plain), SESSION)


def _attributes(response: httpx.Response, name: str) -> set[str]:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(f"{name}="):
            return {part.strip().split("=", 1)[0].lower() for part in value.split(";")[1:]}
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


# ----------------------------------------------------------------- finding 8: non-ASCII


def test_a_non_ascii_key_or_token_is_a_401_not_a_500(svc: Service) -> None:
    r = httpx.delete(f"{svc.url}/api/deployments/nope", timeout=30,
                     headers={"Authorization": "Bearer ключ".encode(), "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 401
    with browser(svc, "203.0.113.9") as client:
        assert sign_in(client, "ключ").status_code == 400
        assert sign_in(client).status_code == 303
        session, token = client.cookies[SESSION], client.cookies["csrftoken"]
    r = httpx.delete(f"{svc.url}/api/deployments/nope", timeout=30,
                     headers={**cookie_header(**{SESSION: session, "csrftoken": token}),
                              "X-CSRFToken": "ключ".encode()})
    assert r.status_code == 401
    # the pages' CSRF check (Litestar's compare_digest) is a 403 too, wherever the token is
    long = "ключ" * 20
    for headers, data in [({"X-CSRFToken": long.encode()}, {}), ({}, {"_csrf_token": long}),
                          ({"Cookie": f"csrftoken={long}".encode()}, {"_csrf_token": "a" * 130})]:
        headers = {"Cookie": "csrftoken=" + "a" * 130, **headers}
        assert httpx.post(f"{svc.url}/signin", headers=headers, data=data).status_code == 403


# ----------------------------------------------------------------- a restart; a flood


def test_sessions_survive_a_restart_and_a_flood_from_many_addresses_locks_everyone(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = Service(home, free_port_range(2))
    try:
        with browser(first) as client:
            assert sign_in(client).status_code == 303
            session, token = client.cookies[SESSION], client.cookies["csrftoken"]
        secret = (home / "secret").read_text()
    finally:
        first.stop()
    assert stat.S_IMODE(os.stat(home / "sessions").st_mode) == 0o700
    second = Service(home, first.ports)
    try:
        assert (home / "secret").read_text() == secret
        assert logs(second, **{SESSION: session, "csrftoken": token}) == 404
        # many clients, a few guesses each: the global cap stops the flood
        codes = []
        for n in range(40):
            with browser(second, f"192.0.2.{n + 1}") as client:
                codes.append(sign_in(client, f"guess-{n}").status_code)
        assert codes[0] == 400 and codes[-1] == 429
        with browser(second, "192.0.2.200") as client:
            locked = sign_in(client)
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    finally:
        second.stop()


# ----------------------------------------------------------------- the pieces, as units


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_locks_a_client_for_the_window_then_lets_it_try_again() -> None:
    clock = Clock()
    throttle = Throttle(per_client=5, overall=30, window=60, clock=clock)
    for _ in range(5):
        assert throttle.wait("a") == 0
        throttle.failed("a")
        clock.now += 1
    assert 55 <= throttle.wait("a") <= 56 and throttle.wait("b") == 0
    clock.now += 56
    assert throttle.wait("a") == 0


def test_the_throttle_caps_all_clients_together_and_forgets_old_failures() -> None:
    clock = Clock()
    throttle = Throttle(per_client=5, overall=30, window=60, clock=clock)
    for n in range(30):
        throttle.failed(f"client-{n}")
    assert throttle.wait("someone-new") > 0
    clock.now += 61
    assert throttle.wait("someone-new") == 0
    throttle.failed("x")
    assert throttle.tracked() == 1  # memory stays bounded by the window


def test_the_secret_file_is_made_once_private_and_read_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = server_secret(home)
    assert stat.S_IMODE(os.stat(home / "secret").st_mode) == 0o600
    assert server_secret(home) == secret and len(bytes.fromhex(secret)) == 32
    assert server_secret(tmp_path / "other") != secret


@pytest.mark.parametrize(("content", "mode", "message"), [
    ("", 0o600, "damaged"),
    ("ab" * 32, 0o644, "readable by others"),
])
def test_a_damaged_or_exposed_secret_file_is_refused_with_what_to_do(
        tmp_path: Path, content: str, mode: int, message: str) -> None:
    (tmp_path / "secret").write_text(content)
    (tmp_path / "secret").chmod(mode)
    with pytest.raises(AdvisorError, match=message) as err:
        server_secret(tmp_path)
    assert "delete" in str(err.value)
