"""An appservice (the suite registers one with Synapse: `as_token`, exclusive user namespace
`@ghost_.*`) masquerading as its ghosts at media-ledger: an upload with `?user_id=@ghost_…` is
the ghost's, as Synapse resolves it (whoami with the same `user_id`); a user outside the
namespace is Synapse's 403, passed on."""

from conftest import (
    ADMIN_API, AS_TOKEN, LEDGER_SECRET, PROXY, SERVER_NAME, SYNAPSE, download_authed, http,
    matrix_error, mxc_parts, quote,
)


def register_ghost(localpart: str) -> str:
    r = http("POST", f"{SYNAPSE}/_matrix/client/v3/register", token=AS_TOKEN,
             body={"type": "m.login.application_service", "username": localpart,
                   "inhibit_login": True})
    assert r.status == 200, r.body
    return r.json()["user_id"]


def upload_as(user_id: str | None, data: bytes):
    q = f"?user_id={quote(user_id)}" if user_id else ""
    return http("POST", f"{PROXY}/_matrix/media/v3/upload{q}", token=AS_TOKEN, body=data,
                headers={"Content-Type": "text/plain"})


def uploader(mxc: str) -> str:
    server, _ = mxc_parts(mxc)
    r = http("GET", f"{PROXY}{ADMIN_API}/usage/{server}/uploads?mxc={quote(mxc)}",
             token=LEDGER_SECRET)
    assert r.status == 200, r.body
    return r.json()[mxc]["uploaded_by"]


def test_an_appservice_uploads_as_its_ghost(tokens):
    ghost = register_ghost("ghost_x")
    assert ghost == f"@ghost_x:{SERVER_NAME}"
    r = upload_as(ghost, b"a bridged user's file")
    assert r.status == 200, r.body
    mxc = r.json()["content_uri"]
    assert uploader(mxc) == ghost
    assert download_authed(tokens["bob"], mxc).body == b"a bridged user's file"

    # Without user_id the appservice acts as its sender, as at Synapse.
    r = upload_as(None, b"the bot's own file")
    assert r.status == 200, r.body
    assert uploader(r.json()["content_uri"]) == f"@ghostbot:{SERVER_NAME}"


def test_an_appservice_cannot_masquerade_outside_its_namespace(accounts):
    alice = accounts["alice"].user_id
    # Synapse's own answer, for comparison ...
    at_synapse = http("GET", f"{SYNAPSE}/_matrix/client/v3/account/whoami?user_id={quote(alice)}",
                      token=AS_TOKEN)
    matrix_error(at_synapse, 403, "M_FORBIDDEN")
    # ... passed on by media-ledger.
    matrix_error(upload_as(alice, b"not mine to upload"), 403, "M_FORBIDDEN")
