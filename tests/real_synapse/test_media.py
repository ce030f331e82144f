"""media-ledger beside a real Synapse, through the proxy, with a real client (matrix-nio):
the user-facing media flows and moderation by a Synapse admin."""

import asyncio
import io
import time

from conftest import (
    ADMIN_API, LEDGER, LEDGER_SECRET, PROXY, SERVER_NAME, SYNAPSE, T2BOT_ADMIN_API,
    download_authed, http, login, matrix_error, mxc_parts, png, quote, upload_raw,
)
from nio import (
    DownloadResponse, JoinResponse, ResizingMethod, RoomCreateResponse, RoomMessageImage,
    RoomSendResponse, SyncResponse, ThumbnailResponse, UploadResponse, WhoamiResponse,
)
from PIL import Image


def run(coro):
    return asyncio.run(coro)


async def post_image(client, room_id: str, data: bytes, name: str) -> str:
    """Uploads `data` with the client library and posts it as an m.image; returns the mxc."""
    up, _ = await client.upload(io.BytesIO(data), content_type="image/png", filename=name,
                                filesize=len(data))
    assert isinstance(up, UploadResponse), up
    assert up.content_uri.startswith(f"mxc://{SERVER_NAME}/"), up.content_uri
    img = Image.open(io.BytesIO(data))
    sent = await client.room_send(room_id, "m.room.message", {
        "msgtype": "m.image", "body": name, "url": up.content_uri,
        "info": {"mimetype": "image/png", "size": len(data), "w": img.width, "h": img.height},
    })
    assert isinstance(sent, RoomSendResponse), sent
    return up.content_uri


async def shared_room(owner, guest, room_version=None) -> str:
    """A room `owner` creates and `guest` joins; its id."""
    created = await owner.room_create(invite=[guest.user_id], room_version=room_version)
    assert isinstance(created, RoomCreateResponse), created
    joined = await guest.join(created.room_id)
    assert isinstance(joined, JoinResponse), joined
    return created.room_id


async def wait_for_image(client, room_id: str, mxc: str) -> RoomMessageImage:
    """Syncs until the m.image with `mxc` arrives in `room_id` (bounded: 60 s)."""
    since = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=5000, since=since)
        assert isinstance(resp, SyncResponse), resp
        since = resp.next_batch
        room = resp.rooms.join.get(room_id)
        for ev in room.timeline.events if room else []:
            if isinstance(ev, RoomMessageImage) and ev.url == mxc:
                return ev
    raise AssertionError(f"{mxc} never arrived in {room_id}")


def test_register_and_login_two_users(accounts, tokens):
    async def go():
        for name in ("alice", "bob"):
            c = await login(accounts[name])
            who = await c.whoami()
            assert isinstance(who, WhoamiResponse), who
            assert who.user_id == f"@{name}:{SERVER_NAME}"
            await c.close()
    run(go())
    assert tokens["alice"] != tokens["bob"]


def test_unknown_token_is_refused_by_media_ledger(tokens):
    r = http("POST", f"{PROXY}/_matrix/media/v3/upload", token="not-a-token", body=b"x",
             headers={"Content-Type": "text/plain"})
    matrix_error(r, 401, "M_UNKNOWN_TOKEN")
    r = http("POST", f"{PROXY}/_matrix/media/v3/upload", body=b"x",
             headers={"Content-Type": "text/plain"})
    matrix_error(r, 401, "M_MISSING_TOKEN")


def test_image_in_a_room_downloads_byte_identical_for_the_other_user(accounts, tokens):
    data = png(64, 48)

    async def go():
        alice, bob = await login(accounts["alice"]), await login(accounts["bob"])
        try:
            room = await shared_room(alice, bob)
            mxc = await post_image(alice, room, data, "gradient.png")
            ev = await wait_for_image(bob, room, mxc)
            got = await bob.download(mxc=ev.url)
            assert isinstance(got, DownloadResponse), got
            assert got.body == data
            assert got.content_type == "image/png"
            return mxc
        finally:
            await alice.close()
            await bob.close()

    mxc = run(go())
    server, media_id = mxc_parts(mxc)
    # media-ledger holds it, recorded as alice's (her token resolved by Synapse's whoami) ...
    r = http("GET", f"{PROXY}{ADMIN_API}/usage/{server}/uploads?mxc={quote(mxc)}",
             token=LEDGER_SECRET)
    assert r.status == 200, r.body
    rec = r.json()[mxc]
    assert rec["uploaded_by"] == accounts["alice"].user_id, rec
    assert rec["size_bytes"] == len(data), rec
    # ... and Synapse does not: its own media API has never seen the id.
    r = http("GET", f"{SYNAPSE}/_matrix/client/v1/media/download/{server}/{media_id}",
             token=tokens["bob"])
    assert r.status == 404, r.status


def test_thumbnails_of_an_uploaded_image(accounts):
    data = png(400, 300)

    async def go():
        alice, bob = await login(accounts["alice"]), await login(accounts["bob"])
        try:
            room = await shared_room(alice, bob)
            mxc = await post_image(alice, room, data, "big.png")
            server, media_id = mxc_parts(mxc)
            sizes = {}
            for w, h, method in [(96, 96, ResizingMethod.crop), (320, 240, ResizingMethod.scale)]:
                t = await bob.thumbnail(server, media_id, w, h, method=method)
                assert isinstance(t, ThumbnailResponse), t
                assert t.content_type.startswith("image/"), t.content_type
                sizes[method] = Image.open(io.BytesIO(t.body)).size
            return sizes
        finally:
            await alice.close()
            await bob.close()

    sizes = run(go())
    assert sizes[ResizingMethod.crop] == (96, 96), sizes
    assert sizes[ResizingMethod.scale] == (320, 240), sizes


def test_async_upload_create_then_put(tokens):
    r = http("POST", f"{PROXY}/_matrix/media/v1/create", token=tokens["alice"], body={})
    assert r.status == 200, r.body
    v = r.json()
    mxc = v["content_uri"]
    assert v["unused_expires_at"] > time.time() * 1000, v
    server, media_id = mxc_parts(mxc)
    assert server == SERVER_NAME
    put_url = f"{PROXY}/_matrix/media/v3/upload/{server}/{media_id}"
    body = b"async upload through a real Synapse's tokens\n" * 100

    # Another user cannot fill alice's reservation.
    r = http("PUT", put_url, token=tokens["bob"], body=b"bob's bytes",
             headers={"Content-Type": "text/plain"})
    matrix_error(r, 403, "M_FORBIDDEN")

    r = http("PUT", put_url, token=tokens["alice"], body=body,
             headers={"Content-Type": "text/plain"})
    assert r.status == 200, r.body
    r = http("PUT", put_url, token=tokens["alice"], body=b"again",
             headers={"Content-Type": "text/plain"})
    matrix_error(r, 409, "M_CANNOT_OVERWRITE_MEDIA")

    r = download_authed(tokens["bob"], mxc)
    assert r.status == 200, r.body[:200]
    assert r.body == body
    assert r.headers["content-type"].startswith("text/plain")


def test_synapse_admin_quarantines_a_media_through_media_ledger(tokens):
    data = png(32, 32)
    mxc = upload_raw(tokens["alice"], data, "image/png")
    server, media_id = mxc_parts(mxc)
    assert download_authed(tokens["bob"], mxc).body == data

    # A plain user of the homeserver may not.
    r = http("POST", f"{PROXY}{ADMIN_API}/quarantine/{server}/{media_id}", token=tokens["bob"])
    matrix_error(r, 403, "M_FORBIDDEN")
    assert download_authed(tokens["bob"], mxc).status == 200

    # A Synapse admin may (media-ledger asks Synapse's admin API whether the caller is one).
    r = http("POST", f"{PROXY}{ADMIN_API}/quarantine/{server}/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json()["num_quarantined"] == 1
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")
    matrix_error(download_authed(tokens["alice"], mxc), 404, "M_NOT_FOUND")

    # Lifted through matrix-media-repo's second admin prefix.
    r = http("POST", f"{PROXY}{T2BOT_ADMIN_API}/unquarantine/{server}/{media_id}",
             token=tokens["mod"])
    assert r.status == 200, r.body
    assert download_authed(tokens["bob"], mxc).body == data


def test_synapse_admin_quarantines_a_v11_room(accounts, tokens):
    data = png(24, 24)

    async def go():
        alice, bob = await login(accounts["alice"]), await login(accounts["bob"])
        try:
            room = await shared_room(alice, bob, room_version="11")
            mxc = await post_image(alice, room, data, "room.png")
            await wait_for_image(bob, room, mxc)
            return room, mxc
        finally:
            await alice.close()
            await bob.close()

    room, mxc = run(go())
    assert room.endswith(f":{SERVER_NAME}"), room
    assert download_authed(tokens["bob"], mxc).body == data
    # media-ledger lists the room's media with Synapse's admin API, asked with mod's token.
    r = http("POST", f"{PROXY}{ADMIN_API}/quarantine/room/{quote(room)}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json()["num_quarantined"] == 1
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")


async def room_with_image(accounts, data: bytes, name: str) -> tuple[str, str]:
    """A room of Synapse's default version that alice creates and bob joins, with an m.image
    of `data` alice posted and bob received; (room id, mxc)."""
    alice, bob = await login(accounts["alice"]), await login(accounts["bob"])
    try:
        room = await shared_room(alice, bob)
        mxc = await post_image(alice, room, data, name)
        await wait_for_image(bob, room, mxc)
        return room, mxc
    finally:
        await alice.close()
        await bob.close()


def assert_v12_room_id(room: str) -> None:
    """Room version 12 (Synapse 1.163's default): `!` + 43 url-safe base64 characters, no
    `:server`."""
    assert room.startswith("!") and ":" not in room, room
    assert len(room) == 44, room


def test_synapse_admin_quarantines_a_v12_room(accounts, tokens):
    data = png(26, 26)
    room, mxc = run(room_with_image(accounts, data, "v12.png"))
    assert_v12_room_id(room)
    assert download_authed(tokens["bob"], mxc).body == data
    # A plain user may not; the room id is accepted all the same (403, not 400).
    r = http("POST", f"{PROXY}{ADMIN_API}/quarantine/room/{quote(room)}", token=tokens["bob"])
    matrix_error(r, 403, "M_FORBIDDEN")
    r = http("POST", f"{PROXY}{ADMIN_API}/quarantine/room/{quote(room)}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json()["num_quarantined"] == 1
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")
    matrix_error(download_authed(tokens["alice"], mxc), 404, "M_NOT_FOUND")


def test_synapse_admin_purges_a_v12_room(accounts, tokens):
    data = png(28, 20)
    room, mxc = run(room_with_image(accounts, data, "purged.png"))
    assert_v12_room_id(room)
    elsewhere = upload_raw(tokens["alice"], png(20, 28), "image/png")
    assert download_authed(tokens["bob"], mxc).body == data
    r = http("POST", f"{PROXY}{ADMIN_API}/purge/room/{quote(room)}", token=tokens["mod"])
    assert r.status == 200, r.body
    v = r.json()
    assert v["purged"] is True, v
    assert v["affected"] == [mxc], v
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")
    # Media not posted in the room is kept.
    assert download_authed(tokens["bob"], elsewhere).status == 200


def test_healthz_and_the_t2bot_admin_prefix(tokens):
    r = http("GET", f"{LEDGER}/healthz")
    assert r.status == 200
    assert r.json() == {"ok": True, "status": "Probably not dead"}

    answers = []
    for prefix in (ADMIN_API, T2BOT_ADMIN_API):
        r = http("GET", f"{PROXY}{prefix}/datastores", token=LEDGER_SECRET)
        assert r.status == 200, r.body
        answers.append(r.json())
        # A Synapse admin is not a repository admin: datastores are not theirs to see.
        matrix_error(http("GET", f"{PROXY}{prefix}/datastores", token=tokens["mod"]),
                     403, "M_FORBIDDEN")
    assert answers[0] == answers[1]
    assert list(answers[0]) == ["files"], answers[0]


def test_head_and_range_through_the_proxy(tokens):
    data = bytes(range(256)) * 40
    mxc = upload_raw(tokens["alice"], data)
    server, media_id = mxc_parts(mxc)
    url = f"{PROXY}/_matrix/client/v1/media/download/{server}/{media_id}"
    r = http("HEAD", url, token=tokens["bob"])
    assert r.status == 200
    assert int(r.headers["content-length"]) == len(data)
    assert r.body == b""
    r = http("GET", url, token=tokens["bob"], headers={"Range": "bytes=1000-1999"})
    assert r.status == 206, r.status
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert r.body == data[1000:2000]


def test_synapse_admin_quarantines_a_user_media(tokens, accounts):
    carol = accounts["carol"].user_id
    mine = [upload_raw(tokens["carol"], png(8 + i, 8)) for i in range(3)]
    other = upload_raw(tokens["alice"], png(9, 9))
    r = http("POST", f"{PROXY}{ADMIN_API}/quarantine/user/{quote(carol)}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json()["num_quarantined"] == len(mine)
    for mxc in mine:
        matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")
    assert download_authed(tokens["bob"], other).status == 200
