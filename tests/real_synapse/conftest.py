"""Fixtures of the real-Synapse suite. `.ci/synapse-suite` starts Synapse, media-ledger and
the proxy and passes their addresses in RS_* variables; the tests reach everything through
the proxy (as a client would), except media-ledger's own /healthz, its `events` CLI (the log,
read beside the running server) and Synapse itself where a test needs what Synapse holds.

Users are registered with Synapse's shared-secret admin API (raw HTTP: a client library has
no call for it); logging in is the client library's (matrix-nio).
"""

import asyncio
import hashlib
import hmac
import io
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest
from nio import AsyncClient, AsyncClientConfig, LoginResponse

PROXY = os.environ["RS_PROXY"]
SYNAPSE = os.environ["RS_SYNAPSE"]
LEDGER = os.environ["RS_LEDGER"]
SERVER_NAME = os.environ["RS_SERVER_NAME"]
SHARED_SECRET = os.environ["RS_SHARED_SECRET"]
LEDGER_SECRET = os.environ["RS_LEDGER_SECRET"]
AS_TOKEN = os.environ["RS_AS_TOKEN"]
LEDGER_BIN = os.environ["RS_LEDGER_BIN"]
LEDGER_CONFIG = os.environ["RS_LEDGER_CONFIG"]

ADMIN_API = "/_matrix/media/unstable/admin"
T2BOT_ADMIN_API = "/_matrix/media/unstable/io.t2bot.media/admin"


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method, url, token=None, body=None, headers=None, timeout=30) -> Reply:
    """One raw HTTP request; any status is returned, not raised. `body`: bytes or a JSON value."""
    h = dict(headers or {})
    data = None
    if body is not None:
        if isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def matrix_error(reply: Reply, status: int, errcode: str) -> dict:
    """Asserts a Matrix error: the status, JSON `{"errcode", "error"}` with `errcode`."""
    assert reply.status == status, (reply.status, reply.body[:300])
    v = reply.json()
    assert v.get("errcode") == errcode, v
    assert isinstance(v.get("error"), str), v
    return v


def mxc_parts(mxc: str) -> tuple[str, str]:
    assert mxc.startswith("mxc://"), mxc
    server, media_id = mxc[len("mxc://") :].split("/", 1)
    return server, media_id


def quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def register(localpart: str, password: str, admin: bool) -> str:
    """Registers a user with the shared-secret admin API; returns the user id."""
    url = f"{SYNAPSE}/_synapse/admin/v1/register"
    nonce = http("GET", url).json()["nonce"]
    mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    r = http("POST", url, body={"nonce": nonce, "username": localpart, "password": password,
                                "admin": admin, "mac": mac.hexdigest()})
    assert r.status == 200, r.body
    return r.json()["user_id"]


@dataclass
class Account:
    user_id: str
    password: str


@pytest.fixture(scope="session")
def accounts() -> dict[str, Account]:
    """alice, bob and carol (plain users; carol's media gets quarantined as a whole), dave (a
    plain user whose every session gets logged out) and mod (a Synapse admin), registered once
    per run."""
    out = {}
    for name, admin in [("alice", False), ("bob", False), ("carol", False), ("dave", False),
                        ("mod", True)]:
        pw = secrets.token_urlsafe(12)
        out[name] = Account(register(name, pw, admin), pw)
    return out


async def login(account: Account) -> AsyncClient:
    """A matrix-nio client logged in through the proxy."""
    c = AsyncClient(PROXY, account.user_id, config=AsyncClientConfig(store_sync_tokens=False))
    resp = await c.login(account.password, device_name="real-synapse-suite")
    assert isinstance(resp, LoginResponse), resp
    return c


@pytest.fixture(scope="session")
def tokens(accounts) -> dict[str, str]:
    """An access token per account (its own login, through the proxy)."""

    async def go():
        out = {}
        for name, acc in accounts.items():
            c = await login(acc)
            out[name] = c.access_token
            await c.close()
        return out

    return asyncio.run(go())


def png(width: int, height: int) -> bytes:
    """A real PNG with some structure (a gradient), so thumbnails have something to keep."""
    from PIL import Image

    img = Image.new("RGB", (width, height))
    img.putdata([((x * 255) // width, (y * 255) // height, 128)
                 for y in range(height) for x in range(width)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upload_raw(token: str, data: bytes, content_type: str = "application/octet-stream") -> str:
    r = http("POST", f"{PROXY}/_matrix/media/v3/upload", token=token, body=data,
             headers={"Content-Type": content_type})
    assert r.status == 200, r.body
    return r.json()["content_uri"]


def download_authed(token: str, mxc: str) -> Reply:
    server, media_id = mxc_parts(mxc)
    return http("GET", f"{PROXY}/_matrix/client/v1/media/download/{server}/{media_id}",
                token=token)


def ledger_events(mxc: str) -> list[dict]:
    """media-ledger's log entries about `mxc` (`media-ledger events --media`, read-only beside
    the running server), as JSON values."""
    out = subprocess.run([LEDGER_BIN, "events", "--config", LEDGER_CONFIG, "--media", mxc],
                         capture_output=True, timeout=60, check=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def upload_to_synapse(token: str, data: bytes, content_type: str = "application/octet-stream",
                      filename: str | None = None) -> str:
    """Uploads straight to Synapse's own media repository (not through the proxy), as a bridge
    or a client of the days before media-ledger did; returns the mxc."""
    q = f"?filename={quote(filename)}" if filename else ""
    r = http("POST", f"{SYNAPSE}/_matrix/media/v3/upload{q}", token=token, body=data,
             headers={"Content-Type": content_type})
    assert r.status == 200, r.body
    return r.json()["content_uri"]


SUMMARY: list[str] = []


def summary(line: str) -> None:
    """A line for the summary printed at the end of the run (shown under `pytest -q` too)."""
    SUMMARY.append(line)


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("measured")
        for line in SUMMARY:
            terminalreporter.write_line(line)
