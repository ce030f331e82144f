"""`media-ledger import synapse` against a real Synapse: media uploaded straight to Synapse (two
users, several types, a non-ASCII upload name, 1 MB of binary, the thumbnails Synapse
generated, one media quarantined and one protected with Synapse's admin API) is imported from a
consistent copy of Synapse's SQLite database (Python's backup API, Synapse keeps running) and
Synapse's live media store into a fresh media-ledger data folder. A `media-ledger serve` on
that folder, with no `cs_api` (nothing can be read through: every byte served comes from the
import), then serves each media under its old mxc URI byte for byte, with the `media_info`
Synapse gave for it.

Also: a second run changes nothing, the import refuses a ledger its server has open,
`--dry-run` records nothing, a run SIGKILLed at random moments and resumed ends exactly where a
one-shot run ends, damaged input (a missing file, a truncated one, a changed one, a truncated
thumbnail, a path-traversing media id) is skipped and reported while the rest goes through, an
unreadable database is refused with a non-zero exit, a cached remote media keeps its origin,
media sharing the bytes of a quarantined one come as Synapse had them, a media media-ledger
read through before the import is not imported again, and `--link` hard-links.

The import reads the whole of Synapse's database, so it also brings the media other test files
stored at Synapse: counts are checked against the rows of the database copy, and the media
checked one by one are this file's own (its own users)."""

import hashlib
import io
import json
import os
import random
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    LEDGER_BIN, SERVER_NAME, SYNAPSE, http, matrix_error, mxc_parts, quote, summary,
    upload_to_synapse,
)
from importing import (
    CROP_SIZES, IMPORT_TIMEOUT, MEDIA_STORE, SYNAPSE_DIR, V1, Ledger, Rows, as_booleans,
    backup_db, body_of, differences, events, free_port, fresh_ledger, import_summary,
    import_synapse_cmd, media_info, mxc_of, noisy_image, quarantine_and_protect, query, rows_of,
    run_timed, serving, synapse_users, thumbnail, upload_plan,
)
from importing import download as download_from
from PIL import Image

# Beside Synapse's folder, in the suite's work folder: on the same filesystem as the media store
# (for --link), removed with the work folder on success, kept with it on failure.
WORK = SYNAPSE_DIR.parent / "import-tests"
ADMIN = "/_matrix/media/unstable/admin"


# --- helpers ----------------------------------------------------------------------------------

def local_content(store: Path, media_id: str) -> Path:
    """Where Synapse keeps a local media (synapse/media/filepath.py)."""
    return store / "local_content" / media_id[0:2] / media_id[2:4] / media_id[4:]


def local_thumbnail(store: Path, media_id: str, w: int, h: int, ctype: str, method: str) -> Path:
    top, sub = ctype.split("/")
    return (store / "local_thumbnails" / media_id[0:2] / media_id[2:4] / media_id[4:]
            / f"{w}-{h}-{top}-{sub}-{method}")


def new_ledger(name: str, cs_api: str | None = None) -> Ledger:
    """A fresh data folder (see importing.fresh_ledger). `cs_api`: none (the default) for every
    ledger an import is checked on."""
    return fresh_ledger(WORK, name, f"@import-check:{SERVER_NAME}", cs_api=cs_api)


def run_import(led: Ledger, db, store: Path = MEDIA_STORE, *extra: str,
               ok: bool = True) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Runs the importer to its end; its stdout is exactly one JSON object (the summary)."""
    p, _ = run_timed(import_synapse_cmd(led, db, store, *extra), IMPORT_TIMEOUT)
    if not ok:
        return p, None
    return p, import_summary(p)



def migrated_count(led: Ledger) -> int | str:
    """How many media the log records; a ledger whose creation a kill interrupted may not be
    readable by `media-ledger events` until the next open completes it: then that error."""
    try:
        return sum(e["type"] == "media.migrated.v1" for e in events(led))
    except AssertionError as e:
        return f"unreadable: {str(e).splitlines()[0][:80]}"


def blobs_of(led: Ledger) -> set[str]:
    """Blobs in the ledger's datastore (content-addressed files, named by their SHA-256)."""
    if not led.media_dir.exists():
        return set()
    return {p.name for p in led.media_dir.rglob("*") if len(p.name) == 64 and p.is_file()}


def blob_count(led: Ledger) -> int:
    return len(blobs_of(led))


def affected(e: dict) -> list[str]:
    """The media an event names (one, or a moderation act's list), as mxc URIs."""
    m = body_of(e).get("media")
    return [mxc_of(x) for x in (m if isinstance(m, list) else [m] if m else [])]



@dataclass
class State:
    """A ledger's media as the log records them (seq, times and request ids left out)."""
    media: dict      # mxc -> its migrated record
    thumbnails: set  # (mxc, width, height, method, sha256, content_type)
    quarantined: dict  # mxc -> actor
    pinned: set
    migrated_twice: list
    thumbnails_twice: list


MIGRATED_KEYS = ("sha256", "size_bytes", "content_type", "upload_name", "uploader", "remote",
                 "created_at_ms", "last_access_ms")


def state_of(evs: list[dict]) -> State:
    media, quarantined, pinned = {}, {}, set()
    thumbs = Counter()
    twice = []
    for e in evs:
        t, b = e["type"], body_of(e)
        if t == "media.migrated.v1":
            m = mxc_of(b["media"])
            if m in media:
                twice.append(m)
            media[m] = {k: b.get(k) for k in MIGRATED_KEYS}
        elif t == "thumbnail.generated.v1":
            thumbs[(mxc_of(b["media"]), b["width"], b["height"], str(b["method"]).lower(),
                    b["sha256"], b["content_type"])] += 1
        elif t == "media.quarantined.v1":
            for m in b["media"]:
                quarantined[mxc_of(m)] = e["actor"]
        elif t == "media.unquarantined.v1":
            for m in b["media"]:
                quarantined.pop(mxc_of(m), None)
        elif t == "media.attributes_set.v1":
            if str(b["purpose"]).lower() == "pinned":
                pinned.add(mxc_of(b["media"]))
            else:
                pinned.discard(mxc_of(b["media"]))
    return State(media, set(thumbs), quarantined, pinned, twice,
                 [k for k, n in thumbs.items() if n > 1])


def download(led: Ledger, mxc: str, token: str | None = None):
    """From the ledger's own server, with its static token unless another is given."""
    return download_from(led.url, token or led.token, mxc)


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of a media store made of hard links (fast); a file to be changed in it must be
    unlinked first and written anew (see `replace`), never written through the link."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def replace(path: Path, data: bytes | None) -> None:
    """Unlinks `path` in a linked copy (Synapse's own file is untouched) and, unless `data` is
    None, writes `data` there as a new file."""
    path.unlink(missing_ok=True)
    if data is not None:
        path.write_bytes(data)


# --- what Synapse holds -----------------------------------------------------------------------

@dataclass
class Fixture:
    media: dict          # name -> Media
    quarantined: str     # name
    protected: str       # name
    mod: str             # the Synapse admin who quarantined
    tokens: dict         # name -> Synapse token
    users: dict          # name -> user id
    info: dict           # name -> Synapse's media_info at the time of the copy
    db: Path             # the database copy
    rows: Rows


@pytest.fixture(scope="module")
def synapse_media() -> Fixture:
    tag = secrets.token_hex(3)
    users, tokens = synapse_users("import", tag, "import tests")

    plan = [
        # name, uploader, bytes, content type, upload name
        ("png", "alice", noisy_image(120, 90, "PNG"), "image/png", "gradient.png"),
        ("jpeg", "bob", noisy_image(160, 120, "JPEG"), "image/jpeg", "photo.jpg"),
        ("text", "alice", "Grüße aus Köln — 日本語のメモ\n".encode() * 40,
         "text/plain; charset=utf-8", "résumé – 日本語 notes.txt"),
        ("blob", "bob", os.urandom(1_000_003), "application/octet-stream", None),
        ("quarantined", "bob", noisy_image(100, 100, "PNG"), "image/png", "reported.png"),
        ("protected", "alice", noisy_image(110, 110, "PNG"), "image/png", "keep-me.png"),
        ("spare", "bob", b"a media whose row the bad-input test renames\n" * 7, "text/plain",
         "spare.txt"),
    ]
    media = upload_plan(plan, users, tokens)

    # How Synapse serves each, and the thumbnails it serves (generated at upload,
    # dynamic_thumbnails off), the same bytes as in its media store.
    for m in media.values():
        r = http("GET", f"{SYNAPSE}/_matrix/client/v1/media/download/{SERVER_NAME}/{m.media_id}",
                 token=tokens["bob"])
        assert r.status == 200 and r.body == m.data, (m.mxc, r.status)
        m.served_type = r.headers["content-type"]
        if not m.content_type.startswith("image/"):
            continue
        for w, h in CROP_SIZES:
            r = thumbnail(SYNAPSE, tokens["bob"], m.mxc, w, h)
            assert r.status == 200, (m.mxc, r.status, r.body[:300])
            assert Image.open(io.BytesIO(r.body)).size == (w, h)
            stored = local_thumbnail(MEDIA_STORE, m.media_id, w, h, m.content_type, "crop")
            assert stored.read_bytes() == r.body, stored
            m.thumbnails[(w, h)] = r.body

    quarantine_and_protect(tokens, media["quarantined"], media["protected"])

    # Synapse's media_info of each, read before and after the copy until both agree (Synapse
    # writes last-access times in the background): what the copy holds is what Synapse said.
    db = WORK / f"fixture-{tag}" / "homeserver.db"
    for _ in range(5):
        before = {n: media_info(SYNAPSE, tokens["mod"], m.mxc) for n, m in media.items()}
        backup_db(db)
        after = {n: media_info(SYNAPSE, tokens["mod"], m.mxc) for n, m in media.items()}
        if before == after:
            break
    else:
        pytest.fail("Synapse's media_info kept changing around the database copy")
    assert after["quarantined"]["quarantined_by"] == users["mod"], after["quarantined"]
    after = {n: as_booleans(i) for n, i in after.items()}
    assert after["protected"]["safe_from_quarantine"] is True, after["protected"]
    return Fixture(media, "quarantined", "protected", users["mod"], tokens, users, after, db,
                   rows_of(db))


@dataclass
class Imported:
    led: Ledger
    summary: dict
    seconds: float


@pytest.fixture(scope="module")
def imported(synapse_media) -> Imported:
    """One import of the fixture's database copy into a fresh ledger (server stopped), with
    the defaults for --server-name and --datastore."""
    led = new_ledger("main")
    t0 = time.monotonic()
    _, out = run_import(led, synapse_media.db)
    took = time.monotonic() - t0
    summary(f"import synapse: {out['imported']} media, {out['thumbnails']} thumbnails, "
            f"{out['bytes']} bytes in {took:.2f} s wall ({out['seconds']} s reported)")
    return Imported(led, out, took)


# --- the import, served -----------------------------------------------------------------------

def test_the_import_counts_every_row_of_synapses_database(synapse_media, imported):
    rows, out = synapse_media.rows, imported.summary
    assert out["skipped"] == [], out["skipped"]
    assert out["imported"] == rows.media, (out, rows)
    assert out["already_imported"] == 0, out
    assert out["thumbnails"] == rows.thumbnails, (out, rows)
    assert out["quarantined"] == rows.quarantined >= 1, (out, rows)
    assert out["pinned"] == rows.pinned >= 1, (out, rows)
    assert out["bytes"] == rows.bytes, (out, rows)
    assert isinstance(out["seconds"], (int, float)) and out["seconds"] >= 0, out

    st = state_of(events(imported.led))
    assert st.migrated_twice == [] and st.thumbnails_twice == [], st
    assert len(st.media) == rows.media
    for m in synapse_media.media.values():
        rec = st.media[m.mxc]
        assert rec["sha256"] == hashlib.sha256(m.data).hexdigest(), m.mxc
        assert rec["size_bytes"] == len(m.data), m.mxc


def test_every_media_is_served_under_its_old_mxc_as_synapse_described_it(synapse_media,
                                                                          imported):
    fx, led = synapse_media, imported.led
    q, p = fx.media[fx.quarantined], fx.media[fx.protected]
    with serving(led) as base:
        # media_info first (a download moves last_access_ts): Synapse's admin API as
        # media-ledger serves it, asked with the shared secret, equals Synapse's own answer
        # for the same media, field by field (sha256, quarantined_by, safe_from_quarantine,
        # created_ts, last_access_ts, upload_name, user_id, authenticated included). By
        # design one difference: Synapse leaves last_access_ts null until a download of the
        # media is written (in 60 s batches); the import takes the creation time for it.
        for name, m in fx.media.items():
            got = media_info(base, led.secret, m.mxc)
            want = dict(fx.info[name])
            if want["last_access_ts"] is None:
                want["last_access_ts"] = want["created_ts"]
            assert got == want, (name, differences(got, want))

        # Byte for byte, under the old mxc; the quarantined one refused.
        for name, m in fx.media.items():
            r = download(led, m.mxc)
            if name == fx.quarantined:
                matrix_error(r, 404, "M_NOT_FOUND")
                continue
            assert r.status == 200, (name, r.status, r.body[:300])
            assert r.body == m.data, name
            # As stored (Synapse adds "; charset=UTF-8" when it serves a text/* type stored
            # without a charset; media-ledger serves the type as recorded).
            assert r.headers["content-type"] == m.content_type, (name, r.headers, m.served_type)

        # Thumbnails: the very bytes Synapse generated and served for that size.
        for name, m in fx.media.items():
            if name == fx.quarantined:
                continue
            for (w, h), theirs in m.thumbnails.items():
                r = thumbnail(base, led.token, m.mxc, w, h)
                assert r.status == 200, (name, w, h, r.status, r.body[:300])
                assert r.body == theirs, (name, w, h, "not Synapse's thumbnail")

        # The quarantine is a real one, by Synapse's moderator: in the audit log with that
        # actor, and its bytes are refused as a new upload.
        r = http("GET", f"{base}{ADMIN}/audit?kind=quarantine&limit=500", token=led.secret)
        assert r.status == 200, r.body
        acts = [a for a in r.json()["chunk"] if q.mxc in a["affected"]]
        assert len(acts) == 1, acts
        assert acts[0]["actor"] == fx.mod, acts[0]
        assert acts[0]["type"] == "media.quarantined.v1", acts[0]
        r = http("POST", f"{base}/_matrix/media/v3/upload", token=led.token, body=q.data,
                 headers={"Content-Type": "image/png"})
        matrix_error(r, 403, "M_FORBIDDEN")

        # The protected one stays protected: media-ledger's quarantine leaves it alone.
        server, media_id = mxc_parts(p.mxc)
        r = http("POST", f"{base}{ADMIN}/quarantine/{server}/{media_id}", token=led.secret)
        assert r.status == 200, r.body
        assert r.json() == {"num_quarantined": 0}, r.json()
        assert download(led, p.mxc).body == p.data
        info = media_info(base, led.secret, p.mxc)
        assert info["safe_from_quarantine"] is True and info["quarantined_by"] is None, info


# --- a second run -----------------------------------------------------------------------------

def test_a_second_run_imports_nothing_and_records_nothing(synapse_media, imported):
    led = imported.led
    before = events(led)
    _, out = run_import(led, synapse_media.db)
    assert out["imported"] == 0, out
    assert out["already_imported"] == imported.summary["imported"], (out, imported.summary)
    assert out["skipped"] == [], out
    after = events(led)
    # Only the run's own task is recorded: it started, and it finished having imported nothing.
    new = after[len(before):]
    assert [e["type"] for e in new][:1] == ["import.started.v1"], [e["type"] for e in new]
    assert {e["type"] for e in new} <= {"import.started.v1", "import.progress.v1"}, new
    done = [body_of(e) for e in new if e["type"] == "import.progress.v1"][-1]
    assert done["finished"] is True and done["imported"] == 0, done
    assert after[:len(before)] == before


def test_the_import_refuses_a_ledger_its_server_has_open(synapse_media, imported):
    led = imported.led
    with serving(led):
        before = events(led)
        p, _ = run_import(led, synapse_media.db, ok=False)
        assert p.returncode != 0, (p.stdout, p.stderr[-2000:])
        assert "running" in p.stderr or "lock" in p.stderr.lower(), p.stderr[-2000:]
        assert events(led) == before


# --- --dry-run --------------------------------------------------------------------------------

def test_a_dry_run_reads_everything_and_records_nothing(synapse_media):
    led = new_ledger("dry")
    _, out = run_import(led, synapse_media.db, MEDIA_STORE, "--dry-run")
    assert out["skipped"] == [], out
    # It says what the import would do.
    assert out["imported"] == synapse_media.rows.media, out
    assert out["bytes"] == synapse_media.rows.bytes, out
    assert events(led) == []
    stored = [p for p in led.media_dir.rglob("*")
              if p.is_file() and not p.name.startswith(".")] if led.media_dir.exists() else []
    assert stored == [], stored
    # And the real run afterwards still imports everything.
    _, out = run_import(led, synapse_media.db)
    assert out["imported"] == synapse_media.rows.media and out["already_imported"] == 0, out


# --- killed at random moments -----------------------------------------------------------------

BULK_MEDIA = 40
BULK_MIN, BULK_MAX = 200_000, 600_000


def test_an_import_killed_at_random_moments_ends_as_a_one_shot_import(synapse_media):
    fx = synapse_media
    seed = int(os.environ.get("RS_IMPORT_SEED", secrets.randbits(32)))
    rng = random.Random(seed)
    # More media at Synapse for this test (some images: thumbnails and their rows too).
    bulk = []
    for i in range(BULK_MEDIA):
        who = "alice" if i % 2 else "bob"
        if i % 8 == 0:
            bulk.append(upload_to_synapse(fx.tokens[who], noisy_image(200, 150, "PNG"),
                                          "image/png", f"bulk-{i}.png"))
        else:
            bulk.append(upload_to_synapse(fx.tokens[who],
                                          os.urandom(rng.randrange(BULK_MIN, BULK_MAX)),
                                          "application/octet-stream", f"bulk-{i}.bin"))
    db = backup_db(WORK / f"kill-{seed}" / "homeserver.db")
    try:
        kill_and_compare(fx, seed, rng, db)
    finally:
        # Gone from Synapse afterwards: the other test files import all of Synapse.
        for m in bulk:
            http("DELETE", f"{SYNAPSE}{V1}/media/{SERVER_NAME}/{mxc_parts(m)[1]}",
                 token=fx.tokens["mod"])


def kill_and_compare(fx: Fixture, seed: int, rng: random.Random, db: Path) -> None:
    rows = rows_of(db)
    extra = ("--server-name", SERVER_NAME, "--datastore", "files")

    one = new_ledger("oneshot")
    t0 = time.monotonic()
    _, want = run_import(one, db, MEDIA_STORE, *extra)
    one_shot = time.monotonic() - t0
    assert want["imported"] == rows.media and want["skipped"] == [], (want, rows)

    # Three SIGKILLs, each followed by a new run. The first at a random moment after the start
    # (50 ms to 800 ms, and within the first half of the one-shot run): it lands while the
    # ledger is being created or opened, which takes most of a run. The other two at random
    # points of the import itself: when the datastore holds a random number of the blobs still
    # to come (a fixed delay rarely hits the import: it is the shortest part of a run).
    killed = new_ledger("killed")
    total_blobs = blob_count(one)
    kills = []
    for k in range(3):
        p = subprocess.Popen(import_synapse_cmd(killed, db, MEDIA_STORE, *extra),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Every blob placed already (only records and acts left): a blob count would never
        # be reached, so this kill is by time, as the first.
        if k == 0 or blob_count(killed) >= total_blobs - 1:
            delay = rng.uniform(0.05, min(0.8, max(0.1, one_shot / 2)))
            when = f"{delay * 1000:.0f} ms"
            time.sleep(delay)
        else:
            have = blob_count(killed)
            target = have + rng.randrange(1, max(2, total_blobs - have))
            when = f"blob {target}/{total_blobs}"
            deadline = time.monotonic() + 60
            while p.poll() is None and blob_count(killed) < target:
                assert time.monotonic() < deadline, "the import made no progress in 60 s"
                time.sleep(0.002)
        running = p.poll() is None
        p.kill()
        p.wait(timeout=60)
        kills.append((when, running, migrated_count(killed)))
    _, last = run_import(killed, db, MEDIA_STORE, *extra)
    summary(f"import synapse kill test (seed {seed}, one-shot {one_shot:.2f} s): kills "
            f"(when, still running, media recorded after) {kills}; final run "
            f"{last['imported']} imported, {last['already_imported']} already imported")
    # A kill aimed at a blob count lands while the import runs (it polls the running process).
    # A kill by time once every blob is placed may come after a fast run has ended: that run
    # simply completed, which the final comparison covers as well.
    assert all(running for when, running, _ in kills[1:] if when.startswith("blob")), (
        f"a kill came after the import had ended (seed {seed}): {kills}")
    assert last["skipped"] == [], last
    assert last["imported"] + last["already_imported"] == rows.media, (last, rows)

    a, b = state_of(events(one)), state_of(events(killed))
    assert b.migrated_twice == [], f"media recorded twice (seed {seed}): {b.migrated_twice}"
    assert b.thumbnails_twice == [], (seed, "thumbnails recorded twice", b.thumbnails_twice)
    assert set(b.media) == set(a.media), (seed, set(a.media) ^ set(b.media))
    for m in a.media:
        assert b.media[m] == a.media[m], (seed, m, b.media[m], a.media[m])
    assert b.thumbnails == a.thumbnails, (seed, a.thumbnails ^ b.thumbnails)
    assert b.quarantined == a.quarantined, (seed, a.quarantined, b.quarantined)
    assert b.pinned == a.pinned, (seed, a.pinned, b.pinned)
    assert fx.media[fx.quarantined].mxc in b.quarantined and fx.media[fx.protected].mxc in b.pinned

    # The same blobs (a killed run's spool leftovers aside), and a server on it serves them.
    assert blobs_of(killed) == blobs_of(one), (seed, blobs_of(killed) ^ blobs_of(one))
    with serving(killed):
        for name, m in fx.media.items():
            if name != fx.quarantined:
                assert download(killed, m.mxc).body == m.data, (seed, name)
    # Its start-up sweep removed what the kills left in the spool.
    left = [p.name for p in killed.media_dir.rglob("*") if p.is_file()
            and not p.name.startswith(".") and len(p.name) != 64]
    assert left == [], (seed, left)

    # The log and every blob it names are sound after the kills, each blob holding the bytes
    # its event says.
    v = subprocess.run([LEDGER_BIN, "verify", "--blobs", "--config", str(killed.config)],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0, (seed, v.stdout[-2000:], v.stderr[-2000:])
    for e in events(killed):
        if e["type"] in ("media.migrated.v1", "thumbnail.generated.v1"):
            ev = body_of(e)
            data = (killed.media_dir / ev["location"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == ev["sha256"], (seed, ev)


# --- bad input --------------------------------------------------------------------------------

@dataclass
class Damaged:
    db: Path
    store: Path
    bad: str   # the path-traversing id a row was given
    sid: str   # the id it had


def damaged_copy(fx: Fixture) -> Damaged:
    """Copies of the fixture's database and of the media store with: the text's file missing,
    the blob's truncated, one byte of the JPEG changed (its length kept: only Synapse's
    recorded sha256 tells), the PNG's 32x32 thumbnail truncated, and the spare's row renamed to
    an id that is no media id."""
    work = Path(tempfile.mkdtemp(prefix="bad-input.", dir=WORK))
    db = work / "homeserver.db"
    shutil.copyfile(fx.db, db)
    store = linked_copy(MEDIA_STORE, work / "media_store")
    text, blob, jpeg, png, spare = (fx.media[n] for n in ("text", "blob", "jpeg", "png", "spare"))

    # A missing file, a truncated one, a changed one, a truncated thumbnail.
    replace(local_content(store, text.media_id), None)
    replace(local_content(store, blob.media_id), blob.data[: len(blob.data) // 2])
    flipped = bytearray(jpeg.data)
    flipped[len(flipped) // 2] ^= 0x55
    replace(local_content(store, jpeg.media_id), bytes(flipped))
    thumb = local_thumbnail(store, png.media_id, 32, 32, "image/png", "crop")
    replace(thumb, thumb.read_bytes()[:100])
    # A row renamed to an id that is no media id, whose Synapse path still leads to a real file
    # of the right length (local_content/AB/CD/../CD/EF… is the spare's own file): only the
    # id's check can refuse it.
    sid = spare.media_id
    bad = f"{sid[0:4]}../{sid[2:4]}/{sid[4:]}"
    assert local_content(store, bad).resolve() == local_content(store, sid).resolve()
    con = sqlite3.connect(db)
    with con:
        n = con.execute("UPDATE local_media_repository SET media_id = ? WHERE media_id = ?",
                        (bad, sid)).rowcount
    con.close()
    assert n == 1
    return Damaged(db, store, bad, sid)


def test_damaged_rows_are_skipped_and_reported_and_the_rest_imported(synapse_media):
    fx = synapse_media
    dmg = damaged_copy(fx)
    db, store, bad, sid = dmg.db, dmg.store, dmg.bad, dmg.sid
    text, blob, jpeg, png = (fx.media[n] for n in ("text", "blob", "jpeg", "png"))
    rows = rows_of(db)
    jpeg_thumbs = query(db, "SELECT count(*) FROM local_media_repository_thumbnails"
                            " WHERE media_id = ?", (jpeg.media_id,))[0][0]
    led = new_ledger("bad")
    _, out = run_import(led, db, store)
    skipped = out["skipped"]
    summary(f"import synapse skipped: {json.dumps(skipped, ensure_ascii=False)}")

    def reason_for(pred) -> str:
        hits = [s for s in skipped if pred(s["media"])]
        assert len(hits) == 1, (hits, skipped)
        assert isinstance(hits[0]["reason"], str) and hits[0]["reason"].strip(), hits[0]
        return hits[0]["reason"].lower()

    def mentions(reason: str, *words: str) -> bool:
        return any(w in reason for w in words)

    assert len(skipped) == 5, skipped
    r = reason_for(lambda s: s == text.mxc)
    assert mentions(r, "missing", "not found", "no such file", "does not exist"), r
    r = reason_for(lambda s: s == blob.mxc)
    assert mentions(r, "length", "size", "bytes", "truncat"), r
    r = reason_for(lambda s: s == jpeg.mxc)
    assert mentions(r, "sha-256", "sha256", "hash", "digest", "checksum"), r
    # Its 32x32 thumbnail: reported under the media's mxc (the importer adds which thumbnail
    # after it: "mxc://… thumbnail 32x32 crop").
    r = reason_for(lambda s: s.split()[0] == png.mxc and "thumbnail" in s)
    assert mentions(r, "length", "size", "bytes", "truncat"), r
    r = reason_for(lambda s: bad in s or quote(bad) in s)
    assert mentions(r, "invalid", "media id", "not a valid", "not allowed", "character"), r

    assert out["imported"] == rows.media - 4, (out, rows)
    # Not the changed JPEG's thumbnails (its media is not here), nor the truncated one.
    assert out["thumbnails"] == rows.thumbnails - 1 - jpeg_thumbs, (out, rows, jpeg_thumbs)
    st = state_of(events(led))
    assert text.mxc not in st.media and blob.mxc not in st.media and jpeg.mxc not in st.media
    assert not any(bad in m or sid in m for m in st.media), [m for m in st.media if sid in m]
    assert st.media[png.mxc]["sha256"] == hashlib.sha256(png.data).hexdigest()
    kept = {(w, h) for (m, w, h, *_rest) in st.thumbnails if m == png.mxc}
    assert (32, 32) not in kept and (96, 96) in kept, kept

    # Repaired, the next run takes what was skipped (the missing file back) and nothing else.
    replace(local_content(store, text.media_id), text.data)
    _, again = run_import(led, db, store)
    assert again["imported"] == 1, again
    assert text.mxc in state_of(events(led)).media


def test_a_dry_run_finds_the_faults_a_real_run_finds(synapse_media):
    dmg = damaged_copy(synapse_media)
    led = new_ledger("bad-dry")
    _, dry = run_import(led, dmg.db, dmg.store, "--dry-run")
    assert events(led) == []
    _, out = run_import(led, dmg.db, dmg.store)
    assert sorted(x["media"] for x in dry["skipped"]) == sorted(x["media"] for x in out["skipped"])
    assert dry["imported"] == out["imported"], (dry, out)


def test_an_unreadable_database_fails_with_a_clear_message_and_records_nothing(tmp_path):
    led = new_ledger("unreadable")
    missing = tmp_path / "no-such" / "homeserver.db"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database\n" * 100)
    refused = f"postgres://synapse:secret@127.0.0.1:{free_port()}/synapse"
    for db, needle in [(missing, str(missing)), (garbage, str(garbage)),
                       (tmp_path, str(tmp_path)), (refused, "127.0.0.1")]:
        t0 = time.monotonic()
        p, _ = run_import(led, db, MEDIA_STORE, ok=False)
        took = time.monotonic() - t0
        assert p.returncode != 0, (db, p.stdout, p.stderr)
        assert p.stderr.strip(), (db, "no message on stderr")
        if needle:
            assert needle in p.stderr, (db, p.stderr[-2000:])
        assert took < 30, (db, took)
        assert "secret" not in p.stderr, "the database password is in the message"
    assert not missing.exists(), "the importer created the database it was to read"
    assert events(led) == []


def test_a_database_that_is_not_synapses_is_refused(tmp_path):
    """A readable SQLite file without Synapse's media tables (a wrong --database: another
    program's database, an empty file SQLite made) is an error, not an import of nothing."""
    led = new_ledger("not-synapse")
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE unrelated (x)")
    con.close()
    p, _ = run_import(led, other, MEDIA_STORE, ok=False)
    assert p.returncode != 0, (p.stdout, p.stderr[-2000:])
    assert "local_media_repository" in p.stderr or "Synapse" in p.stderr, p.stderr[-2000:]
    assert events(led) == []


# --- remote media, --link ---------------------------------------------------------------------

def test_a_cached_remote_media_keeps_its_origin_and_its_thumbnail(synapse_media):
    """Synapse's remote_media_cache (a row and its file made here in a copy: the suite's
    Synapse has no federation peer) becomes cached remote media of its origin."""
    fx = synapse_media
    work = Path(tempfile.mkdtemp(prefix="remote.", dir=WORK))
    db = work / "homeserver.db"
    shutil.copyfile(fx.db, db)
    store = linked_copy(MEDIA_STORE, work / "media_store")
    origin, media_id, fsid = "remote.example", "RemoteMedia" + secrets.token_hex(6), \
        "fs" + secrets.token_hex(12)
    data, thumb = noisy_image(64, 64, "PNG"), noisy_image(32, 32, "PNG")
    path = store / "remote_content" / origin / fsid[0:2] / fsid[2:4] / fsid[4:]
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    tpath = (store / "remote_thumbnail" / origin / fsid[0:2] / fsid[2:4] / fsid[4:]
             / "32-32-image-png-crop")
    tpath.parent.mkdir(parents=True)
    tpath.write_bytes(thumb)
    created = int(time.time() * 1000) - 86_400_000
    row = {"media_origin": origin, "media_id": media_id, "media_type": "image/png",
           "media_length": len(data), "upload_name": "far-away.png", "created_ts": created,
           "filesystem_id": fsid, "last_access_ts": created + 1000, "quarantined_by": None,
           "authenticated": True, "sha256": hashlib.sha256(data).hexdigest()}
    trow = {"media_origin": origin, "media_id": media_id, "thumbnail_width": 32,
            "thumbnail_height": 32, "thumbnail_method": "crop", "thumbnail_type": "image/png",
            "thumbnail_length": len(thumb), "filesystem_id": fsid}
    con = sqlite3.connect(db)
    with con:
        for table, values in [("remote_media_cache", row),
                              ("remote_media_cache_thumbnails", trow)]:
            cols = [c[1] for c in con.execute(f"PRAGMA table_info({table})")]
            values = {k: v for k, v in values.items() if k in cols}
            con.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES "
                        f"({', '.join('?' * len(values))})", list(values.values()))
    con.close()
    rows = rows_of(db)
    assert rows.remote >= 1

    led = new_ledger("remote")
    _, out = run_import(led, db, store)
    assert out["skipped"] == [] and out["imported"] == rows.media, (out, rows)
    mxc = f"mxc://{origin}/{media_id}"
    rec = state_of(events(led)).media[mxc]
    assert rec["remote"] is True and rec["sha256"] == row["sha256"], rec
    with serving(led) as base:
        info = media_info(base, led.secret, mxc)
        # Synapse's remote shape: media_origin set, no user, safe_from_quarantine null.
        # filesystem_id is media-ledger's own (its media id), not Synapse's file name: by design.
        assert info["media_origin"] == origin and info["user_id"] is None, info
        assert info["safe_from_quarantine"] is None, info
        for k in ("media_id", "media_type", "media_length", "upload_name", "created_ts",
                  "last_access_ts", "sha256"):
            assert info[k] == row[k], (k, info[k], row[k])
        r = download(led, mxc)
        assert r.status == 200 and r.body == data, (r.status, r.body[:200])
        r = thumbnail(base, led.token, mxc, 32, 32)
        assert r.status == 200 and r.body == thumb, (r.status, r.body[:200])


def test_media_sharing_the_bytes_of_a_quarantined_one_are_imported_as_synapse_had_them(
        synapse_media):
    """Synapse quarantines by hash: quarantining a media quarantines every unprotected media
    with the same bytes (a meme posted twice), leaves a protected one served, and a later upload
    of those bytes is quarantined at once by "system" (or, in a young Synapse, not at all).
    Each is imported as Synapse had it, whatever order the importer meets them in."""
    fx = synapse_media
    data = noisy_image(90, 70, "PNG")

    def fillers(n: int) -> None:
        # Rows between the copies: the importer works on a few rows at a time, so the first
        # copy (its quarantine included) is done before the next is reached.
        for _ in range(n):
            upload_to_synapse(fx.tokens["alice"], secrets.token_bytes(64), "text/plain",
                              "filler.txt")

    a = upload_to_synapse(fx.tokens["alice"], data, "image/png", "meme.png")
    fillers(10)
    b = upload_to_synapse(fx.tokens["bob"], data, "image/png", "meme-again.png")
    fillers(10)
    c = upload_to_synapse(fx.tokens["alice"], data, "image/png", "meme-kept.png")
    r = http("POST", f"{SYNAPSE}{V1}/media/protect/{mxc_parts(c)[1]}", token=fx.tokens["mod"])
    assert r.status == 200, r.body
    r = http("POST", f"{SYNAPSE}{V1}/media/quarantine/{SERVER_NAME}/{mxc_parts(a)[1]}",
             token=fx.tokens["mod"])
    assert r.status == 200, r.body
    fillers(10)
    d = upload_to_synapse(fx.tokens["bob"], data, "image/png", "meme-later.png")
    fillers(2)

    work = Path(tempfile.mkdtemp(prefix="same-bytes.", dir=WORK))
    for _ in range(5):
        want = {m: as_booleans(media_info(SYNAPSE, fx.tokens["mod"], m)) for m in (a, b, c, d)}
        db = backup_db(work / "homeserver.db")
        if want == {m: as_booleans(media_info(SYNAPSE, fx.tokens["mod"], m))
                    for m in (a, b, c, d)}:
            break
    # d: "system" once Synapse's background update indexing local_media_repository.sha256 has
    # run (get_is_hash_quarantined answers False before), which a young Synapse may not have.
    assert [want[m]["quarantined_by"] for m in (a, b, c)] == [fx.mod, fx.mod, None], want
    assert want[d]["quarantined_by"] in ("system", None), want[d]
    summary(f"import synapse same bytes: the later upload quarantined by Synapse as "
            f"{want[d]['quarantined_by']!r}")
    assert want[c]["safe_from_quarantine"] is True

    rows = rows_of(db)
    led = new_ledger("same-bytes")
    try:
        _, out = run_import(led, db)
    finally:
        # Gone from Synapse once imported (the other test files import all of Synapse: they
        # are not to meet these).
        for m in (a, b, c, d):
            http("DELETE", f"{SYNAPSE}{V1}/media/{SERVER_NAME}/{mxc_parts(m)[1]}",
                 token=fx.tokens["mod"])
    names = {a: "a (quarantined)", b: "b (quarantined with a)", c: "c (protected)",
             d: f"d (later, quarantined_by {want[d]['quarantined_by']})"}
    assert out["skipped"] == [], [(names.get(x["media"]), x["reason"]) for x in out["skipped"]]
    assert out["imported"] == rows.media, (out, rows)
    with serving(led) as base:
        for m in (a, b, c, d):
            got = media_info(base, led.secret, m)
            w = dict(want[m])
            if w["last_access_ts"] is None:
                w["last_access_ts"] = w["created_ts"]  # by design: see the served test
            if m == d and w["quarantined_by"] == "system":
                # By design: a quarantine here is one act on the bytes (invariant 18), so the
                # act carried over for a also reaches d, which Synapse had marked by `system`
                # on upload; `quarantined_by` names that act's actor. Quarantined all the same.
                assert got["quarantined_by"] == fx.mod, got
                w["quarantined_by"] = fx.mod
            assert got == w, (m, differences(got, w))
        for m in (a, b, c, d):
            r = download(led, m)
            if want[m]["quarantined_by"]:
                matrix_error(r, 404, "M_NOT_FOUND")
            else:
                assert r.status == 200 and r.body == data, (m, r.status, r.body[:200])


def test_a_media_read_through_before_the_import_is_not_imported_again(synapse_media):
    """README "Switching with no downtime": media-ledger already serves Synapse's media by
    reading it through, then the bulk import runs. A media read through already is counted as
    already imported (one record of it, not two) and still gets Synapse's thumbnails and its
    protection."""
    fx = synapse_media
    p = fx.media[fx.protected]
    led = new_ledger("read-through", cs_api=SYNAPSE)
    with serving(led):
        r = download(led, p.mxc, token=fx.tokens["alice"])  # a Synapse user's token
        assert r.status == 200 and r.body == p.data, (r.status, r.body[:200])
    assert [e["type"] for e in events(led)
            if e["type"].startswith("media.")] == ["media.imported.v1"], events(led)

    _, out = run_import(led, fx.db)
    assert out["skipped"] == [], out["skipped"]
    assert (out["imported"], out["already_imported"]) == (fx.rows.media - 1, 1), out
    assert out["pinned"] == fx.rows.pinned, out
    evs = events(led)
    about = [e["type"] for e in evs
             if e["type"] != "media.accessed.v1" and p.mxc in affected(e)]
    thumbs = query(fx.db, "SELECT count(*) FROM local_media_repository_thumbnails"
                          " WHERE media_id = ?", (p.media_id,))[0][0]
    assert sorted(about) == sorted(["media.imported.v1", "media.attributes_set.v1"]
                                   + ["thumbnail.generated.v1"] * thumbs), about
    assert about[0] == "media.imported.v1", about
    assert p.mxc in state_of(evs).pinned


def test_link_hard_links_synapses_files_instead_of_copying(synapse_media):
    fx = synapse_media
    led = new_ledger("link")
    _, out = run_import(led, fx.db, MEDIA_STORE, "--link")
    assert out["imported"] == fx.rows.media and out["skipped"] == [], out
    blob = fx.media["blob"]
    ev = [body_of(e) for e in events(led) if e["type"] == "media.migrated.v1"
          and mxc_of(body_of(e)["media"]) == blob.mxc]
    assert len(ev) == 1, ev
    ours = led.media_dir / ev[0]["location"]
    theirs = local_content(MEDIA_STORE, blob.media_id)
    assert ours.read_bytes() == blob.data
    assert os.stat(ours).st_ino == os.stat(theirs).st_ino, "copied, not linked"
