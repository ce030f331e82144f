"""Read-through of media Synapse stored itself (README "Switching with no downtime"): a media
uploaded straight to Synapse (before the switch, or by a bridge) is served through the proxy
by media-ledger, which asks Synapse once (its `cs_api`, with the request's token), records
`media.imported.v1` and serves its own copy from then on."""

import io

from conftest import (
    PROXY, SERVER_NAME, SYNAPSE, download_authed, http, ledger_events, matrix_error, mxc_parts,
    png, upload_to_synapse,
)
from PIL import Image


def imports(mxc: str) -> list[dict]:
    return [e for e in ledger_events(mxc) if e["type"] == "media.imported.v1"]


def test_a_media_synapse_stored_is_read_through_once(tokens):
    data = b"uploaded to Synapse before the switch\n" * 50
    mxc = upload_to_synapse(tokens["alice"], data, "text/plain", "before.txt")
    server, media_id = mxc_parts(mxc)
    assert server == SERVER_NAME
    legacy = f"{PROXY}/_matrix/media/v3/download/{server}/{media_id}"

    # Never imported: an anonymous (legacy) download does not make media-ledger ask Synapse.
    matrix_error(http("GET", legacy), 404, "M_NOT_FOUND")
    assert imports(mxc) == []

    # Another user, authenticated: read through from Synapse with bob's token.
    r = download_authed(tokens["bob"], mxc)
    assert r.status == 200, r.body[:300]
    assert r.body == data
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    got = imports(mxc)
    assert len(got) == 1, got

    # Synapse forgets it (its own admin API, straight to Synapse): media-ledger's copy is what
    # is served from now on, without a new import.
    r = http("DELETE", f"{SYNAPSE}/_synapse/admin/v1/media/{server}/{media_id}",
             token=tokens["mod"])
    assert r.status == 200, r.body
    assert r.json()["total"] == 1, r.body
    gone = http("GET", f"{SYNAPSE}/_matrix/client/v1/media/download/{server}/{media_id}",
                token=tokens["bob"])
    assert gone.status == 404, gone.status
    for token in (tokens["bob"], tokens["carol"]):
        r = download_authed(token, mxc)
        assert r.status == 200, r.body[:300]
        assert r.body == data
    assert len(imports(mxc)) == 1

    # Imported after the freeze point: still not served on the legacy endpoint without a token.
    matrix_error(http("GET", legacy), 404, "M_NOT_FOUND")


def test_a_thumbnail_of_an_image_synapse_stored(tokens):
    data = png(300, 200)
    mxc = upload_to_synapse(tokens["alice"], data, "image/png", "synapse.png")
    server, media_id = mxc_parts(mxc)
    r = http("GET", f"{PROXY}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
                    "?width=96&height=96&method=crop", token=tokens["bob"])
    assert r.status == 200, r.body[:300]
    assert r.headers["content-type"].startswith("image/"), r.headers
    assert Image.open(io.BytesIO(r.body)).size == (96, 96)
    assert len(imports(mxc)) == 1
    # The original is media-ledger's now too.
    r = download_authed(tokens["carol"], mxc)
    assert r.status == 200, r.body[:300]
    assert r.body == data
    assert len(imports(mxc)) == 1


def test_a_media_neither_has_is_404(tokens):
    r = download_authed(tokens["bob"], f"mxc://{SERVER_NAME}/NeverUploadedAnywhere")
    matrix_error(r, 404, "M_NOT_FOUND")
