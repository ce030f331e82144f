"""Federation both ways between two real Synapses, media-ledger serving A's media: B fetches
A's media from media-ledger (X-Matrix checked with B's published keys), media-ledger fetches
B's media signing as A (B checks it with the keys A publishes), and an image posted in a room
joined from both servers reaches the other side byte-identical."""

import asyncio
import io
import json
import os
import time

from conftest import (
    A_NAME, A_PUBLIC, A_SYNAPSE, B, B_NAME, download, http, login, matrix_error, mxc_parts,
    png, upload,
)
from nio import (
    DownloadResponse, JoinResponse, RoomCreateResponse, RoomMessageImage, RoomSendResponse,
    SyncResponse, UploadResponse,
)
from PIL import Image
from signedjson.key import generate_signing_key, read_signing_keys
from signedjson.sign import sign_json

B_KEY = os.environ["FS_B_KEY"]


def run(coro):
    return asyncio.run(coro)


def not_in_synapse_a(mod_token: str, mxc: str) -> None:
    """Synapse A has no record of `mxc` (neither stored nor cached): it was media-ledger that
    stored or fetched it."""
    server, media_id = mxc_parts(mxc)
    r = http("GET", f"{A_SYNAPSE}/_synapse/admin/v1/media/{server}/{media_id}", token=mod_token)
    assert r.status == 404, (r.status, r.body[:300])


def x_matrix(origin: str, key_id: str, key, method: str, uri: str, destination: str) -> str:
    """An X-Matrix Authorization header for a request without a body."""
    signed = sign_json({"method": method, "uri": uri, "origin": origin,
                        "destination": destination}, origin, key)
    sig = signed["signatures"][origin][key_id]
    return (f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",'
            f'sig="{sig}"')


def multipart_parts(reply) -> list[bytes]:
    """The parts of a `multipart/mixed` answer (headers and body of each, as bytes)."""
    ctype = reply.headers["content-type"]
    assert ctype.startswith("multipart/mixed"), ctype
    boundary = ctype.split("boundary=", 1)[1].strip('"').encode()
    chunks = reply.body.split(b"--" + boundary)
    return [c.strip(b"\r\n") for c in chunks[1:-1]]


def test_b_user_downloads_media_of_a_served_by_media_ledger(tokens):
    data = png(200, 150)
    mxc = upload(A_PUBLIC, tokens["alice"], data, "image/png", "a.png")
    assert mxc_parts(mxc)[0] == A_NAME, mxc
    not_in_synapse_a(tokens["amod"], mxc)

    # Synapse B fetches it from A's federation media endpoint: the proxy sends it to
    # media-ledger, which checks B's X-Matrix signature with the keys B publishes.
    r = download(B, tokens["bob"], mxc)
    assert r.status == 200, (r.status, r.body[:300])
    assert r.body == data
    assert r.headers["content-type"] == "image/png"
    # B's thumbnail of it (B thumbnails the bytes it fetched).
    server, media_id = mxc_parts(mxc)
    r = http("GET", f"{B}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
                    "?width=32&height=32&method=crop", token=tokens["bob"])
    assert r.status == 200, (r.status, r.body[:300])
    thumb = Image.open(io.BytesIO(r.body))
    assert max(thumb.size) <= 96, thumb.size


def test_media_quarantined_on_a_is_not_served_to_b(tokens):
    data = png(40, 30)
    mxc = upload(A_PUBLIC, tokens["alice"], data, "image/png", "q.png")
    server, media_id = mxc_parts(mxc)
    # A's Synapse admin quarantines it through media-ledger's admin API (A's public address).
    r = http("POST", f"{A_PUBLIC}/_matrix/media/unstable/admin/quarantine/{server}/{media_id}",
             token=tokens["amod"])
    assert r.status == 200, (r.status, r.body[:300])
    # B never fetched it: media-ledger's federation endpoint refuses it, B answers 404.
    matrix_error(download(B, tokens["bob"], mxc), 404, "M_NOT_FOUND")


def test_a_federation_media_endpoint_checks_x_matrix(tokens):
    data = b"signed for B only " * 100
    mxc = upload(A_PUBLIC, tokens["alice"], data, "application/octet-stream", "f.bin")
    _, media_id = mxc_parts(mxc)
    path = f"/_matrix/federation/v1/media/download/{media_id}"
    url = f"{A_PUBLIC}{path}"

    # Unsigned.
    matrix_error(http("GET", url), 401, "M_UNAUTHORIZED")
    # Claims to be B with a key B does not publish (media-ledger asks B for its keys).
    forged = generate_signing_key("forged")
    auth = x_matrix(B_NAME, "ed25519:forged", forged, "GET", path, A_NAME)
    matrix_error(http("GET", url, headers={"Authorization": auth}), 401, "M_UNAUTHORIZED")

    with open(B_KEY) as f:
        b_key = read_signing_keys(f)[0]
    b_key_id = f"{b_key.alg}:{b_key.version}"
    # B's real key, but addressed to another server.
    auth = x_matrix(B_NAME, b_key_id, b_key, "GET", path, B_NAME)
    matrix_error(http("GET", url, headers={"Authorization": auth}), 401, "M_UNAUTHORIZED")
    # B's real key, to A: the media as multipart/mixed (JSON metadata, then the bytes).
    auth = x_matrix(B_NAME, b_key_id, b_key, "GET", path, A_NAME)
    r = http("GET", url, headers={"Authorization": auth})
    assert r.status == 200, (r.status, r.body[:300])
    parts = multipart_parts(r)
    assert len(parts) == 2, parts
    head, _, meta = parts[0].partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    assert json.loads(meta) == {}
    _, _, body = parts[1].partition(b"\r\n\r\n")
    assert body == data


def test_a_user_downloads_media_of_b_through_media_ledger(tokens):
    data = png(200, 150)
    mxc = upload(B, tokens["bob"], data, "image/png", "b.png")
    assert mxc_parts(mxc)[0] == B_NAME, mxc

    # Through A's proxy to media-ledger, which fetches it from B over federation signed with
    # A's key; B accepts it only if A publishes that key.
    r = download(A_PUBLIC, tokens["alice"], mxc)
    assert r.status == 200, (r.status, r.body[:300])
    assert r.body == data
    assert r.headers["content-type"] == "image/png"
    not_in_synapse_a(tokens["amod"], mxc)
    # Its thumbnail, from media-ledger.
    server, media_id = mxc_parts(mxc)
    r = http("GET", f"{A_PUBLIC}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
                    "?width=32&height=32&method=crop", token=tokens["alice"])
    assert r.status == 200, (r.status, r.body[:300])
    thumb = Image.open(io.BytesIO(r.body))
    assert max(thumb.size) <= 96, thumb.size
    # An id B does not have: B's 404 passed on.
    r = download(A_PUBLIC, tokens["alice"], f"mxc://{B_NAME}/NoSuchMediaOnB")
    matrix_error(r, 404, "M_NOT_FOUND")


async def wait_for_image(client, room_id: str, mxc: str) -> RoomMessageImage:
    """Syncs until the m.image with `mxc` arrives in `room_id` (bounded: 60 s)."""
    since = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=3000, since=since)
        assert isinstance(resp, SyncResponse), resp
        since = resp.next_batch
        room = resp.rooms.join.get(room_id)
        for ev in room.timeline.events if room else []:
            if isinstance(ev, RoomMessageImage) and ev.url == mxc:
                return ev
    raise AssertionError(f"{mxc} never arrived in {room_id}")


async def post_image(client, room_id: str, data: bytes, name: str) -> str:
    up, _ = await client.upload(io.BytesIO(data), content_type="image/png", filename=name,
                                filesize=len(data))
    assert isinstance(up, UploadResponse), up
    sent = await client.room_send(room_id, "m.room.message", {
        "msgtype": "m.image", "body": name, "url": up.content_uri,
        "info": {"mimetype": "image/png", "size": len(data)},
    })
    assert isinstance(sent, RoomSendResponse), sent
    return up.content_uri


def test_image_posted_in_a_room_joined_from_both_servers(accounts):
    async def go():
        alice = await login(accounts["alice"])
        bob = await login(accounts["bob"])
        try:
            # A room on A (the default version, 12), bob on B invited and joining over
            # federation.
            created = await alice.room_create(invite=[bob.user_id])
            assert isinstance(created, RoomCreateResponse), created
            joined = await bob.join(created.room_id)
            assert isinstance(joined, JoinResponse), joined
            room = created.room_id

            # alice's image (stored by media-ledger) downloaded by bob from B.
            a_data = png(120, 90)
            a_mxc = await post_image(alice, room, a_data, "from-a.png")
            assert mxc_parts(a_mxc)[0] == A_NAME, a_mxc
            ev = await wait_for_image(bob, room, a_mxc)
            got = await bob.download(mxc=ev.url)
            assert isinstance(got, DownloadResponse), got
            assert got.body == a_data

            # bob's image (stored by B) downloaded by alice through media-ledger.
            b_data = png(90, 120)
            b_mxc = await post_image(bob, room, b_data, "from-b.png")
            assert mxc_parts(b_mxc)[0] == B_NAME, b_mxc
            ev = await wait_for_image(alice, room, b_mxc)
            got = await alice.download(mxc=ev.url)
            assert isinstance(got, DownloadResponse), got
            assert got.body == b_data
        finally:
            await alice.close()
            await bob.close()

    run(go())

