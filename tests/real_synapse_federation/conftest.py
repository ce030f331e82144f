"""Fixtures of the federation suite. `.ci/synapse-federation-suite` starts Synapse A (its media
served by media-ledger behind a TLS proxy), Synapse B and media-ledger, and passes their
addresses in FS_* variables. A's users reach A through its public TLS address (trusting the
suite's test CA), as a client would; B's users reach B's plain client listener.

Users are registered with each Synapse's shared-secret admin API (raw HTTP); logging in and the
room flow are the client library's (matrix-nio).
"""

import hashlib
import hmac
import io
import json
import os
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from nio import AsyncClient, AsyncClientConfig, LoginResponse

CA = os.environ["FS_CA"]
A_NAME = os.environ["FS_A_NAME"]
A_PUBLIC = os.environ["FS_A_PUBLIC"]
A_SYNAPSE = os.environ["FS_A_SYNAPSE"]
A_SECRET = os.environ["FS_A_SECRET"]
B_NAME = os.environ["FS_B_NAME"]
B = os.environ["FS_B"]
B_SECRET = os.environ["FS_B_SECRET"]
LEDGER = os.environ["FS_LEDGER"]
LEDGER_SECRET = os.environ["FS_LEDGER_SECRET"]

TLS = ssl.create_default_context(cafile=CA)


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method, url, token=None, body=None, headers=None, timeout=60) -> Reply:
    """One raw HTTP(S) request (HTTPS trusting the test CA); any status is returned, not
    raised. `body`: bytes or a JSON value."""
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
        with urllib.request.urlopen(req, timeout=timeout, context=TLS) as r:
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
    server, media_id = mxc[len("mxc://"):].rsplit("/", 1)
    return server, media_id


@dataclass
class Account:
    user_id: str
    password: str
    base: str  # where this user's client talks to its homeserver


def register(synapse: str, secret: str, base: str, localpart: str, admin: bool) -> Account:
    """Registers a user with the shared-secret admin API of `synapse` (reached directly)."""
    url = f"{synapse}/_synapse/admin/v1/register"
    nonce = http("GET", url).json()["nonce"]
    password = secrets.token_urlsafe(12)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    r = http("POST", url, body={"nonce": nonce, "username": localpart, "password": password,
                                "admin": admin, "mac": mac.hexdigest()})
    assert r.status == 200, r.body
    return Account(r.json()["user_id"], password, base)


@pytest.fixture(scope="session")
def accounts() -> dict[str, Account]:
    """alice and amod (a Synapse admin) on A, bob on B."""
    return {
        "alice": register(A_SYNAPSE, A_SECRET, A_PUBLIC, "alice", False),
        "amod": register(A_SYNAPSE, A_SECRET, A_PUBLIC, "amod", True),
        "bob": register(B, B_SECRET, B, "bob", False),
    }


async def login(account: Account) -> AsyncClient:
    """A matrix-nio client logged in at the account's homeserver (A: through its TLS proxy)."""
    c = AsyncClient(account.base, account.user_id, ssl=TLS,
                    config=AsyncClientConfig(store_sync_tokens=False))
    resp = await c.login(account.password, device_name="federation-suite")
    assert isinstance(resp, LoginResponse), resp
    return c


@pytest.fixture(scope="session")
def tokens(accounts) -> dict[str, str]:
    """An access token per account (its own raw login)."""
    out = {}
    for name, acc in accounts.items():
        r = http("POST", f"{acc.base}/_matrix/client/v3/login", body={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": acc.user_id},
            "password": acc.password,
        })
        assert r.status == 200, r.body
        out[name] = r.json()["access_token"]
    return out


def png(width: int, height: int) -> bytes:
    """A real PNG with some structure (a gradient), so thumbnails have something to keep."""
    from PIL import Image

    img = Image.new("RGB", (width, height))
    img.putdata([((x * 255) // width, (y * 255) // height, (x * y) % 256)
                 for y in range(height) for x in range(width)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upload(base: str, token: str, data: bytes, content_type: str, name: str) -> str:
    """Uploads with the v3 media API at `base`; returns the mxc."""
    r = http("POST", f"{base}/_matrix/media/v3/upload?filename={name}", token=token, body=data,
             headers={"Content-Type": content_type})
    assert r.status == 200, r.body
    return r.json()["content_uri"]


def download(base: str, token: str, mxc: str) -> Reply:
    """The authenticated download (client v1) of `mxc` at `base`."""
    server, media_id = mxc_parts(mxc)
    return http("GET", f"{base}/_matrix/client/v1/media/download/{server}/{media_id}",
                token=token)
