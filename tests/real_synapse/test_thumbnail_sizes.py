"""Thumbnail bytes against the real Synapse's (issue 11 item 12): the same source uploaded
straight to Synapse and through the proxy to media-ledger; the 96×96 crop and the 800×600 scale
(sizes both generate by default) asked of each; media-ledger's not much larger, of the same type
family. The sources are generated deterministically with Pillow: a ~7 KB screenshot-like PNG
drawing, a PNG drawing with a fine texture, a photo-like JPEG and a PNG with transparency. The
measured table is printed at the end of the run (and kept in BENCHMARKS.md)."""

import io
import random

import pytest
from conftest import PROXY, SYNAPSE, http, mxc_parts, summary, upload_raw, upload_to_synapse
from PIL import Image, ImageDraw

# media-ledger's thumbnail may be at most this many times Synapse's (measured: BENCHMARKS.md).
MAX_RATIO = 1.5
SIZES = [(96, 96, "crop"), (800, 600, "scale")]


def drawing_png() -> bytes:
    """A screenshot-like drawing: flat colours, lines, boxes and a title on white, 1200×900."""
    img = Image.new("RGB", (1200, 900), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 1199, 59], fill=(40, 70, 120))
    d.rectangle([0, 60, 219, 899], fill=(235, 238, 242))
    for i in range(12):
        y = 90 + i * 60
        d.rectangle([20, y, 200, y + 30], outline=(120, 120, 130), width=2)
    for i in range(8):
        y = 100 + i * 95
        d.rounded_rectangle([260, y, 1160, y + 70], radius=8, outline=(180, 180, 190), width=2)
        d.line([280, y + 45, 280 + 70 * (i + 3), y + 45], fill=(60, 140, 80), width=4)
    d.ellipse([1000, 10, 1040, 50], fill=(230, 180, 60))
    d.text((20, 20), "media-ledger thumbnail sizes", fill="white")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def pattern_png() -> bytes:
    """A drawing with a fine texture, 1600×1200: a checkerboard of 7-pixel squares with a disc
    on it (resizing turns it into many distinct colours: the kind of source on which
    media-ledger's thumbnails were once 7–23× Synapse's; tests/thumbnail_output.rs's pattern)."""
    w, h = 1600, 1200
    tile = Image.new("RGB", (14, 14), (250, 250, 250))
    ImageDraw.Draw(tile).rectangle([7, 0, 13, 6], fill=(20, 40, 90))
    ImageDraw.Draw(tile).rectangle([0, 7, 6, 13], fill=(20, 40, 90))
    img = Image.new("RGB", (w, h))
    for y in range(0, h, 14):
        for x in range(0, w, 14):
            img.paste(tile, (x, y))
    r = h // 4
    ImageDraw.Draw(img).ellipse([w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r],
                                fill=(220, 60, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def photo_jpeg() -> bytes:
    """A photo-like JPEG, 1600×1200: smooth gradients and a fractal, with seeded noise."""
    w, h = 1600, 1200
    base = Image.merge("RGB", [
        Image.linear_gradient("L").resize((w, h)),
        Image.effect_mandelbrot((w, h), (-2.2, -1.2, 1.0, 1.2), 60),
        Image.radial_gradient("L").resize((w, h)),
    ])
    rng = random.Random(11)
    noise = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
    img = Image.blend(base, noise, 0.12)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def alpha_png() -> bytes:
    """A PNG with transparency, 1000×800: anti-aliased shapes on a clear background."""
    img = Image.new("RGBA", (1000, 800), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse([100, 100, 700, 700], fill=(200, 40, 40, 255))
    d.rectangle([500, 200, 950, 600], fill=(40, 90, 200, 160))
    d.polygon([(50, 750), (500, 400), (950, 750)], fill=(30, 160, 70, 200))
    img = img.resize((1000, 800), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


SOURCES = {
    "drawing.png": (drawing_png, "image/png"),
    "pattern.png": (pattern_png, "image/png"),
    "photo.jpg": (photo_jpeg, "image/jpeg"),
    "alpha.png": (alpha_png, "image/png"),
}


def thumbnail(base: str, token: str, mxc: str, w: int, h: int, method: str):
    server, media_id = mxc_parts(mxc)
    r = http("GET", f"{base}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
             f"?width={w}&height={h}&method={method}", token=token)
    assert r.status == 200, (base, r.status, r.body[:300])
    ctype = r.headers["content-type"].split(";")[0].strip()
    img = Image.open(io.BytesIO(r.body))
    return len(r.body), ctype, img.size


@pytest.mark.parametrize("name", list(SOURCES))
def test_thumbnails_are_not_much_larger_than_synapses(tokens, name):
    make, ctype = SOURCES[name]
    data = make()
    on_synapse = upload_to_synapse(tokens["alice"], data, ctype, filename=name)
    on_ledger = upload_raw(tokens["alice"], data, ctype)
    family = "image/jpeg" if ctype == "image/jpeg" else "image/png"
    for w, h, method in SIZES:
        syn_n, syn_type, syn_dims = thumbnail(SYNAPSE, tokens["bob"], on_synapse, w, h, method)
        ml_n, ml_type, ml_dims = thumbnail(PROXY, tokens["bob"], on_ledger, w, h, method)
        summary(f"thumbnail {name} ({len(data)} B) {w}x{h} {method}: media-ledger {ml_n} B "
                f"{ml_type} {ml_dims[0]}x{ml_dims[1]}, Synapse {syn_n} B {syn_type} "
                f"{syn_dims[0]}x{syn_dims[1]}, ratio {ml_n / syn_n:.2f}")
        assert syn_type == family, (name, w, h, syn_type)
        assert ml_type == family, (name, w, h, ml_type)
        assert ml_dims == syn_dims, (name, w, h, ml_dims, syn_dims)
        assert ml_n <= MAX_RATIO * syn_n, (name, w, h, ml_n, syn_n)
