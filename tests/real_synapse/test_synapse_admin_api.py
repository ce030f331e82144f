"""Synapse's own media admin API (`/_synapse/admin/v1/media/…`, `users/{userId}/media`, …),
routed by the proxy to media-ledger as README's nginx regex routes it, called as Synapse-side
tools (synapse-admin, synadm, Draupnir) call it: with a Synapse admin's token. The shapes are
compared with Synapse's own answers for a media Synapse stored (asked of Synapse directly)."""

import asyncio
import hashlib

from conftest import (
    PROXY, SYNAPSE, download_authed, http, matrix_error, mxc_parts, png, quote, upload_raw,
    upload_to_synapse,
)
from test_media import assert_v12_room_id, room_with_image

V1 = "/_synapse/admin/v1"


def test_a_synapse_admin_quarantines_and_lifts_through_synapses_api(tokens):
    data = png(40, 30)
    mxc = upload_raw(tokens["alice"], data, "image/png")
    server, media_id = mxc_parts(mxc)
    assert download_authed(tokens["bob"], mxc).body == data

    # A plain user: 403, as at Synapse.
    r = http("POST", f"{PROXY}{V1}/media/quarantine/{server}/{media_id}", token=tokens["bob"])
    matrix_error(r, 403, "M_FORBIDDEN")
    assert download_authed(tokens["bob"], mxc).status == 200

    r = http("POST", f"{PROXY}{V1}/media/quarantine/{server}/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json() == {}
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")
    info = http("GET", f"{PROXY}{V1}/media/{server}/{media_id}", token=tokens["mod"])
    assert info.status == 200, info.body
    assert info.json()["media_info"]["quarantined_by"] is not None, info.json()

    r = http("POST", f"{PROXY}{V1}/media/unquarantine/{server}/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert download_authed(tokens["bob"], mxc).body == data


def test_media_info_and_a_users_media_have_synapses_shapes(accounts, tokens):
    alice = accounts["alice"].user_id
    data = png(36, 36)
    ours = upload_raw(tokens["alice"], data, "image/png")
    server, media_id = mxc_parts(ours)
    theirs = upload_to_synapse(tokens["alice"], png(12, 12), "image/png", "at-synapse.png")
    _, their_id = mxc_parts(theirs)

    # media_info: media-ledger's (through the proxy) against Synapse's (asked directly).
    r = http("GET", f"{PROXY}{V1}/media/{server}/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    got = r.json()["media_info"]
    r = http("GET", f"{SYNAPSE}{V1}/media/{server}/{their_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    synapse = r.json()["media_info"]
    assert set(got) == set(synapse), (sorted(got), sorted(synapse))
    assert got["media_id"] == media_id
    assert got["user_id"] == alice == synapse["user_id"]
    assert got["media_type"] == "image/png"
    assert got["media_length"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["quarantined_by"] is None and got["safe_from_quarantine"] is False, got
    assert got["authenticated"] is True, got  # created under the freeze
    r = http("GET", f"{PROXY}{V1}/media/{server}/NoSuchMedia", token=tokens["mod"])
    matrix_error(r, 404, "M_NOT_FOUND")

    # users/{userId}/media: alice's media-ledger uploads, in Synapse's page shape.
    r = http("GET", f"{PROXY}{V1}/users/{quote(alice)}/media?limit=500", token=tokens["mod"])
    assert r.status == 200, r.body
    page = r.json()
    ids = [m["media_id"] for m in page["media"]]
    assert media_id in ids and their_id not in ids, ids
    assert page["total"] == len(ids), page
    assert all(m["user_id"] == alice for m in page["media"]), page
    r = http("GET", f"{SYNAPSE}{V1}/users/{quote(alice)}/media", token=tokens["mod"])
    assert r.status == 200, r.body
    synapse_page = r.json()
    assert their_id in [m["media_id"] for m in synapse_page["media"]], synapse_page
    assert set(page) == set(synapse_page), (sorted(page), sorted(synapse_page))
    assert set(page["media"][0]) == set(synapse_page["media"][0]), (
        sorted(page["media"][0]), sorted(synapse_page["media"][0]))
    # Paged as Synapse pages: `next_token` while more follow.
    r = http("GET", f"{PROXY}{V1}/users/{quote(alice)}/media?limit=1&order_by=created_ts&dir=b",
             token=tokens["mod"])
    assert r.status == 200, r.body
    first = r.json()
    assert len(first["media"]) == 1 and first["media"][0]["media_id"] in ids, (first, ids)
    assert first["total"] == len(ids), first
    assert first["next_token"] == 1, first

    # A plain user may not list anyone's media.
    r = http("GET", f"{PROXY}{V1}/users/{quote(alice)}/media", token=tokens["bob"])
    matrix_error(r, 403, "M_FORBIDDEN")


def test_a_protected_media_is_not_quarantined(tokens):
    data = png(22, 44)
    mxc = upload_raw(tokens["alice"], data, "image/png")
    server, media_id = mxc_parts(mxc)
    r = http("POST", f"{PROXY}{V1}/media/protect/{media_id}", token=tokens["bob"])
    matrix_error(r, 403, "M_FORBIDDEN")
    r = http("POST", f"{PROXY}{V1}/media/protect/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    info = http("GET", f"{PROXY}{V1}/media/{server}/{media_id}", token=tokens["mod"]).json()
    assert info["media_info"]["safe_from_quarantine"] is True, info

    # Answered as Synapse answers it ({}), and the media is left alone, as Synapse leaves it.
    r = http("POST", f"{PROXY}{V1}/media/quarantine/{server}/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json() == {}
    assert download_authed(tokens["bob"], mxc).body == data
    info = http("GET", f"{PROXY}{V1}/media/{server}/{media_id}", token=tokens["mod"]).json()
    assert info["media_info"]["quarantined_by"] is None, info

    r = http("POST", f"{PROXY}{V1}/media/unprotect/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    r = http("POST", f"{PROXY}{V1}/media/quarantine/{server}/{media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")


def test_a_synapse_admin_quarantines_a_v12_room_through_synapses_api(accounts, tokens):
    data = png(18, 26)
    room, mxc = asyncio.run(room_with_image(accounts, data, "draupnir.png"))
    assert_v12_room_id(room)
    assert download_authed(tokens["bob"], mxc).body == data
    url = f"{PROXY}{V1}/room/{quote(room)}/media/quarantine"
    matrix_error(http("POST", url, token=tokens["bob"]), 403, "M_FORBIDDEN")
    r = http("POST", url, token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json() == {"num_quarantined": 1}
    matrix_error(download_authed(tokens["bob"], mxc), 404, "M_NOT_FOUND")
