"""The unauthenticated-media freeze (spec v1.11; `downloads.freeze_unauthenticated`, on by
default: the suite's config leaves it so): a media uploaded now is not served on the legacy
unauthenticated endpoints without a token, and is with one, and on the authenticated ones."""

import io

from conftest import PROXY, download_authed, http, matrix_error, mxc_parts, png, upload_raw
from PIL import Image


def test_a_new_media_is_frozen_for_anonymous_legacy_requests(tokens):
    data = png(64, 64)
    mxc = upload_raw(tokens["alice"], data, "image/png")
    server, media_id = mxc_parts(mxc)
    download = f"{PROXY}/_matrix/media/v3/download/{server}/{media_id}"
    thumbnail = (f"{PROXY}/_matrix/media/v3/thumbnail/{server}/{media_id}"
                 "?width=32&height=32&method=scale")

    for url in (download, f"{download}/named.png", thumbnail,
                download.replace("/v3/", "/r0/")):
        matrix_error(http("GET", url), 404, "M_NOT_FOUND")

    # With a token the legacy endpoints serve it (as matrix-media-repo does) ...
    r = http("GET", download, token=tokens["bob"])
    assert r.status == 200, r.body[:300]
    assert r.body == data
    r = http("GET", thumbnail, token=tokens["bob"])
    assert r.status == 200, r.body[:300]
    assert r.headers["content-type"].startswith("image/"), r.headers
    assert Image.open(io.BytesIO(r.body)).size[0] <= 64
    # ... and the authenticated ones do.
    r = download_authed(tokens["bob"], mxc)
    assert r.status == 200, r.body[:300]
    assert r.body == data
