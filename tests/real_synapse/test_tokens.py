"""Tokens as a real Synapse issues them, at media-ledger: guests (download only), expired
refreshable tokens (401 with `soft_logout`, and the refreshed token works) and logout through
the proxy (the old token refused by media-ledger at once, not after the whoami cache's TTL:
the suite runs media-ledger with `auth.whoami_cache_ttl_ms = 300000`)."""

import asyncio
import time

from conftest import (
    PROXY, SYNAPSE, download_authed, http, login, matrix_error, mxc_parts, png, upload_raw,
)
from nio import LogoutResponse


def whoami_at_synapse(token: str):
    return http("GET", f"{SYNAPSE}/_matrix/client/v3/account/whoami", token=token)


def upload(token: str, data: bytes = b"some bytes"):
    return http("POST", f"{PROXY}/_matrix/media/v3/upload", token=token, body=data,
                headers={"Content-Type": "text/plain"})


def test_a_guest_downloads_but_neither_uploads_nor_creates(tokens):
    data = png(30, 20)
    mxc = upload_raw(tokens["alice"], data, "image/png")
    server, media_id = mxc_parts(mxc)

    r = http("POST", f"{PROXY}/_matrix/client/v3/register?kind=guest", body={})
    assert r.status == 200, r.body
    guest = r.json()["access_token"]
    who = whoami_at_synapse(guest).json()
    assert who.get("is_guest") is True, who

    got = download_authed(guest, mxc)
    assert got.status == 200, got.body[:200]
    assert got.body == data
    r = http("GET", f"{PROXY}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
                    "?width=16&height=16&method=scale", token=guest)
    assert r.status == 200, r.body[:200]
    assert r.headers["content-type"].startswith("image/"), r.headers

    matrix_error(upload(guest), 403, "M_GUEST_ACCESS_FORBIDDEN")
    r = http("POST", f"{PROXY}/_matrix/media/v1/create", token=guest, body={})
    matrix_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")


def test_an_expired_refreshable_token_is_a_soft_logout_and_the_refreshed_one_works(
        accounts, tokens):
    mxc = upload_raw(tokens["bob"], b"bob's bytes")
    # Synapse (the suite's config) gives tokens a login asks to be refreshable 4 s of life.
    acc = accounts["alice"]
    r = http("POST", f"{PROXY}/_matrix/client/v3/login", body={
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": acc.user_id},
        "password": acc.password,
        "refresh_token": True,
    })
    assert r.status == 200, r.body
    v = r.json()
    token, refresh = v["access_token"], v["refresh_token"]
    assert 0 < v["expires_in_ms"] <= 4000, v
    # Not used at media-ledger before it expires: a token it resolved stays cached for
    # `auth.whoami_cache_ttl_ms` (a logout through media-ledger is what evicts it).
    deadline = time.monotonic() + 60
    while (synapse := whoami_at_synapse(token)).status == 200:
        assert time.monotonic() < deadline, "the refreshable token never expired"
        time.sleep(0.25)
    said = matrix_error(synapse, 401, "M_UNKNOWN_TOKEN")
    assert said.get("soft_logout") is True, said

    # media-ledger answers as Synapse did: the client refreshes instead of dropping the session.
    for r in (upload(token), download_authed(token, mxc)):
        v = matrix_error(r, 401, "M_UNKNOWN_TOKEN")
        assert v.get("soft_logout") is True, v

    r = http("POST", f"{PROXY}/_matrix/client/v3/refresh", body={"refresh_token": refresh})
    assert r.status == 200, r.body
    fresh = r.json()["access_token"]
    assert fresh != token
    r = upload(fresh, b"after the refresh")
    assert r.status == 200, r.body
    got = download_authed(fresh, r.json()["content_uri"])
    assert got.status == 200, got.body[:200]
    assert got.body == b"after the refresh"



def test_logout_through_the_proxy_refuses_the_token_at_once(accounts):
    async def go():
        c = await login(accounts["alice"])
        token = c.access_token
        # Resolved once by media-ledger (and cached for 300 s) ...
        assert upload(token).status == 200
        # ... then logged out by the client library, through the proxy (to media-ledger, which
        # asks Synapse).
        out = await c.logout()
        await c.close()
        assert isinstance(out, LogoutResponse), out
        return token

    token = asyncio.run(go())
    matrix_error(upload(token), 401, "M_UNKNOWN_TOKEN")
    matrix_error(whoami_at_synapse(token), 401, "M_UNKNOWN_TOKEN")


def test_logout_all_through_the_proxy_refuses_every_token_of_the_user(accounts, tokens):
    mxc = upload_raw(tokens["alice"], b"alice's bytes")

    async def sessions(n):
        out = []
        for _ in range(n):
            c = await login(accounts["dave"])
            out.append(c.access_token)
            await c.close()
        return out

    first, second = asyncio.run(sessions(2))
    for t in (first, second):
        assert download_authed(t, mxc).status == 200
    # The r0 path, raw HTTP.
    r = http("POST", f"{PROXY}/_matrix/client/r0/logout/all", token=first, body={})
    assert r.status == 200, r.body
    assert r.json() == {}, r.body
    for t in (first, second):
        matrix_error(download_authed(t, mxc), 401, "M_UNKNOWN_TOKEN")
        matrix_error(whoami_at_synapse(t), 401, "M_UNKNOWN_TOKEN")
    # Others' sessions are untouched.
    assert download_authed(tokens["alice"], mxc).status == 200
