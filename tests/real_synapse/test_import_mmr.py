"""`media-ledger import mmr` against matrix-media-repo's real PostgreSQL schema on a real
PostgreSQL (Debian's package; a throwaway cluster, see pg.py). Needs no Synapse.

A fresh database gets MMR's own migrations (below, verbatim), then rows and files written as
MMR writes them (its INSERT statements; a `file` datastore with each blob at `aa/bb/rest` of
its object name): media of two local users on two local homeservers, one cached remote media,
one quarantined, one pinned (`media_attributes`), one with a thumbnail (and an animated one,
which is not imported), one sharing its file with another (MMR deduplicates), last-access
times, and the rows that must be skipped: a file missing, a SHA-256 and a size that disagree
with the bytes, a media in an S3 datastore. Imported into a fresh media-ledger (those two
homeservers, no cs_api), the JSON summary must count and name each; served, every media is
byte-identical under its old mxc URI, the admin API shows MMR's uploader, times, type, name,
quarantine and pin, the thumbnail is served for its size; running the import again (with the
same paths, then with none: the paths MMR's `datastores` table records) imports nothing."""

import hashlib
import os
import secrets
import socket
import string
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LEDGER_BIN, http, matrix_error, quote, summary
from importing import (
    SYNAPSE_DIR, V1, Ledger, download, events, free_port, fresh_ledger, import_summary,
    noisy_image, pg_connect, run_timed, serving,
)
from pg import PgCluster, pg_cluster

WORK = SYNAPSE_DIR.parent / "import-mmr"
TIMEOUT = 120
HOME, HOME2 = "mmr.test", "mmr-two.test"  # MMR's `homeservers:`, media-ledger's too
REMOTE = "elsewhere.test"                   # an origin MMR only cached media of
ALICE, BOB = f"@alice:{HOME}", f"@bob:{HOME2}"

# --- MMR's schema ---------------------------------------------------------------------------------
# The up migrations of t2bot/matrix-media-repo (migrations/<n>_*_up.sql, applied by MMR in
# this order at start-up), verbatim, read from the repository at the commit named with each
# file (its history up to 29_add_user_stats_quotas; no release tag checked). Not here:
# 14_add_blurhash_tables / 27_drop_blurhashes (a table created, then dropped) and
# 25_try_create_expiring_media_table (19 again, IF NOT EXISTS): no trace in the schema.
MMR_MIGRATIONS = [
    ("1_create_tables_up.sql", "2112af3f", """
CREATE TABLE IF NOT EXISTS media (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	upload_name TEXT NOT NULL,
	content_type TEXT NOT NULL,
	user_id TEXT NOT NULL,
	sha256_hash TEXT NOT NULL,
	size_bytes BIGINT NOT NULL,
	location TEXT NOT NULL,
	creation_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS media_index ON media (media_id, origin);
CREATE TABLE IF NOT EXISTS thumbnails (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	width INT NOT NULL,
	height INT NOT NULL,
	method TEXT NOT NULL,
	content_type TEXT NOT NULL,
	size_bytes BIGINT NOT NULL,
	location TEXT NOT NULL,
	creation_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS thumbnails_index ON thumbnails (media_id, origin, width, height, method);
CREATE TABLE IF NOT EXISTS url_previews (
	url TEXT NOT NULL,
	error_code TEXT NOT NULL,
	bucket_ts BIGINT NOT NULL,
	site_url TEXT NOT NULL,
	site_name TEXT NOT NULL,
	resource_type TEXT NOT NULL,
	description TEXT NOT NULL,
	title TEXT NOT NULL,
	image_mxc TEXT NOT NULL,
	image_type TEXT NOT NULL,
	image_size BIGINT NOT NULL,
	image_width INT NOT NULL,
	image_height INT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS url_previews_index ON url_previews (url, error_code, bucket_ts);
"""),
    ("2_add_animated_col_up.sql", "1070a2bc", """
ALTER TABLE thumbnails ADD COLUMN animated BOOL NOT NULL DEFAULT FALSE;
DROP INDEX thumbnails_index;
CREATE UNIQUE INDEX IF NOT EXISTS thumbnails_index ON thumbnails (media_id, origin, width, height, method, animated);
"""),
    ("3_add_quarantine_flag_up.sql", "41413019", """
ALTER TABLE media ADD COLUMN quarantined BOOL NOT NULL DEFAULT FALSE;
"""),
    ("4_add_hash_to_thumbnails_up.sql", "44538f47", """
ALTER TABLE thumbnails ADD COLUMN sha256_hash TEXT NULL DEFAULT NULL;
"""),
    ("5_make_thumbnail_hash_required_up.sql", "94cf31e5", """
UPDATE thumbnails SET sha256_hash = '' WHERE sha256_hash IS NULL;
ALTER TABLE thumbnails ALTER COLUMN sha256_hash SET NOT NULL;
"""),
    ("6_track_last_accessed_times_up.sql", "358e5d52", """
CREATE TABLE IF NOT EXISTS last_access (
  sha256_hash TEXT NOT NULL,
  last_access_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS last_access_index ON last_access (sha256_hash);
"""),
    ("7_add_datastore_up.sql", "c2bc340c", """
CREATE TABLE IF NOT EXISTS datastores (
  datastore_id TEXT NOT NULL,
  ds_type TEXT NOT NULL,
  uri TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS datastores_index ON datastores (datastore_id);
ALTER TABLE media ADD COLUMN datastore_id TEXT NOT NULL DEFAULT '';
ALTER TABLE thumbnails ADD COLUMN datastore_id TEXT NOT NULL DEFAULT '';
"""),
    ("8_sha256_indexes_up.sql", "0616245f", """
CREATE INDEX IF NOT EXISTS idx_sha256_hash_media ON media (sha256_hash);
CREATE INDEX IF NOT EXISTS idx_sha256_hash_thumbnails ON thumbnails (sha256_hash);
"""),
    ("9_origin_indexes_up.sql", "a8b142cf", """
CREATE INDEX IF NOT EXISTS idx_origin_media ON media(origin);
CREATE INDEX IF NOT EXISTS idx_origin_thumbnails ON thumbnails(origin);
CREATE INDEX IF NOT EXISTS idx_origin_user_id_media ON media(origin, user_id);
"""),
    ("10_add_background_tasks_table_up.sql", "5bba07f8", """
CREATE TABLE IF NOT EXISTS background_tasks (
    id SERIAL PRIMARY KEY,
    task TEXT NOT NULL,
    params JSON NOT NULL,
    start_ts BIGINT NOT NULL,
    end_ts BIGINT NULL
);
"""),
    ("11_add_reserved_ids_table_up.sql", "28241daf", """
CREATE TABLE IF NOT EXISTS reserved_media (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	reason TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS reserved_media_index ON reserved_media (media_id, origin);
"""),
    ("12_user_id_indexes_up.sql", "275950f1", """
CREATE INDEX IF NOT EXISTS idx_user_id_media ON media(user_id);
"""),
    ("13_add_export_tables_up.sql", "897b3c32", """
CREATE TABLE IF NOT EXISTS exports (
    export_id TEXT PRIMARY KEY NOT NULL,
    entity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS export_parts (
    export_id TEXT NOT NULL,
    index INT NOT NULL,
    size_bytes BIGINT NOT NULL,
    file_name TEXT NOT NULL,
    datastore_id TEXT NOT NULL,
    location TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS export_parts_index ON export_parts (export_id, index);
"""),
    ("15_add_language_url_previews_up.sql", "166729fd", """
ALTER TABLE url_previews ADD COLUMN language_header TEXT NULL DEFAULT NULL;
"""),
    ("16_add_media_attributes_table_up.sql", "578150f7", """
CREATE TABLE IF NOT EXISTS media_attributes (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	purpose TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_media_attributes ON media_attributes (media_id, origin);
CREATE INDEX IF NOT EXISTS idx_media_attributes_purpose on media_attributes (purpose);
"""),
    ("17_add_user_stats_table_up.sql", "a8951b05", """
CREATE TABLE IF NOT EXISTS user_stats (
	user_id TEXT PRIMARY KEY NOT NULL,
	uploaded_bytes BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION track_update_user_media()
    RETURNS TRIGGER
    LANGUAGE PLPGSQL
    AS
$$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO user_stats (user_id, uploaded_bytes) VALUES (NEW.user_id, 0) ON CONFLICT (user_id) DO NOTHING;
        INSERT INTO user_stats (user_id, uploaded_bytes) VALUES (OLD.user_id, 0) ON CONFLICT (user_id) DO NOTHING;

        IF NEW.user_id <> OLD.user_id THEN
            UPDATE user_stats SET uploaded_bytes = user_stats.uploaded_bytes - OLD.size_bytes WHERE user_stats.user_id = OLD.user_id;
            UPDATE user_stats SET uploaded_bytes = user_stats.uploaded_bytes + NEW.size_bytes WHERE user_stats.user_id = NEW.user_id;
        ELSIF NEW.size_bytes <> OLD.size_bytes THEN
            UPDATE user_stats SET uploaded_bytes = user_stats.uploaded_bytes - OLD.size_bytes + NEW.size_bytes WHERE user_stats.user_id = NEW.user_id;
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE user_stats SET uploaded_bytes = user_stats.uploaded_bytes - OLD.size_bytes WHERE user_stats.user_id = OLD.user_id;
        RETURN OLD;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO user_stats (user_id, uploaded_bytes) VALUES (NEW.user_id, NEW.size_bytes) ON CONFLICT (user_id) DO UPDATE SET uploaded_bytes = user_stats.uploaded_bytes + NEW.size_bytes;
        RETURN NEW;
    END IF;
END;
$$;
DROP TRIGGER IF EXISTS media_change_for_user ON media;
CREATE TRIGGER media_change_for_user AFTER INSERT OR UPDATE OR DELETE ON media FOR EACH ROW EXECUTE PROCEDURE track_update_user_media();
"""),
    ("18_populate_user_stats_table_up.sql", "a8951b05", """
DO $$
BEGIN
    IF ((SELECT COUNT(*) FROM user_stats)) = 0 THEN
        INSERT INTO user_stats SELECT user_id, SUM(size_bytes) FROM media GROUP BY user_id;
    END IF;
END $$;
"""),
    ("19_create_expiring_media_table_up.sql", "02bbb81c", """
CREATE TABLE IF NOT EXISTS expiring_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_expiring_media ON expiring_media (media_id, origin);
CREATE INDEX IF NOT EXISTS idx_expiring_media_user_id ON expiring_media (user_id);
CREATE INDEX IF NOT EXISTS idx_expiring_media_expires_ts ON expiring_media (expires_ts);
"""),
    ("20_create_id_hold_table_up.sql", "9b38f2a7", """
CREATE TABLE IF NOT EXISTS media_id_hold (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_media_id_hold ON media_id_hold (media_id, origin);
"""),
    ("21_not_null_end_ts_background_tasks_up.sql", "26d57ac6", """
UPDATE background_tasks SET end_ts = 0 WHERE end_ts IS NULL;
ALTER TABLE background_tasks ALTER COLUMN end_ts SET NOT NULL;
"""),
    ("22_add_thumb_creation_index_up.sql", "0676a1f7", """
CREATE INDEX IF NOT EXISTS idx_creation_ts_thumbnails ON thumbnails(creation_ts);
"""),
    ("23_add_datastore_locations_indexes_up.sql", "4116e786", """
CREATE INDEX IF NOT EXISTS idx_datastore_id_location_thumbnails ON thumbnails(datastore_id, location);
CREATE INDEX IF NOT EXISTS idx_datastore_id_location_media ON media(datastore_id, location);
"""),
    ("24_add_timestamp_to_media_id_hold_up.sql", "5309d9a8", """
ALTER TABLE media_id_hold ADD COLUMN held_ts BIGINT NOT NULL DEFAULT 0;
"""),
    ("26_add_datastore_id_indexes_up.sql", "044e0775", """
CREATE INDEX IF NOT EXISTS idx_datastore_id_thumbnails ON thumbnails(datastore_id);
CREATE INDEX IF NOT EXISTS idx_datastore_id_media ON media(datastore_id);
"""),
    ("28_add_task_error_column_up.sql", "ac7d366c", """
ALTER TABLE background_tasks ADD COLUMN error TEXT NOT NULL DEFAULT '';
"""),
    ("29_add_user_stats_quotas_up.sql", "abccbb3c", """
ALTER TABLE user_stats ADD COLUMN quota_max_bytes BIGINT NOT NULL DEFAULT '-1';
ALTER TABLE user_stats ADD COLUMN quota_max_pending BIGINT NOT NULL DEFAULT '-1';
ALTER TABLE user_stats ADD COLUMN quota_max_files BIGINT NOT NULL DEFAULT '-1';
"""),
]

# MMR's own statements (database/table_*.go), with psycopg2's placeholders.
INSERT_DATASTORE = "INSERT INTO datastores (datastore_id, ds_type, uri) VALUES (%s, %s, %s);"
INSERT_MEDIA = ("INSERT INTO media (origin, media_id, upload_name, content_type, user_id, "
                "sha256_hash, size_bytes, creation_ts, quarantined, datastore_id, location) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s);")
INSERT_THUMBNAIL = ("INSERT INTO thumbnails (origin, media_id, content_type, width, height, "
                    "method, animated, sha256_hash, size_bytes, creation_ts, datastore_id, "
                    "location) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s);")
UPSERT_PURPOSE = ("INSERT INTO media_attributes (origin, media_id, purpose) VALUES (%s, %s, %s) "
                  "ON CONFLICT (origin, media_id) DO UPDATE SET purpose = %s;")
UPSERT_LAST_ACCESS = ("INSERT INTO last_access (sha256_hash, last_access_ts) VALUES (%s, %s) "
                      "ON CONFLICT (sha256_hash) DO UPDATE SET last_access_ts = %s;")


# --- helpers ------------------------------------------------------------------------------------

def unique_id(n: int = 32) -> str:
    """An id as MMR makes them (random letters and digits)."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Media:
    origin: str
    media_id: str
    data: bytes
    content_type: str
    upload_name: str
    user_id: str
    created: int
    location: str = ""
    datastore: str = ""
    last_access: int | None = None
    quarantined: bool = False
    pinned: bool = False
    thumb: bytes | None = None   # a 96x96 crop thumbnail MMR made

    @property
    def mxc(self) -> str:
        return f"mxc://{self.origin}/{self.media_id}"


@dataclass
class Mmr:
    pg: PgCluster
    ds_id: str
    ds_dir: Path
    s3_id: str
    media: dict                  # name -> Media, imported
    skipped: dict                # name -> (what, reason fragment)
    s3_root: Path                # s3s-fs root: bucket `mmr-media` holds the S3 row's object
    s3_media: tuple              # (mxc, bytes) of the row in the S3 datastore


def new_ledger(name: str) -> Ledger:
    """A fresh data folder (see importing.fresh_ledger) with MMR's homeservers, no cs_api:
    every byte served comes from the import."""
    return fresh_ledger(WORK, name, f"@mmr-import-check:{HOME}", homeservers=(HOME, HOME2))


def run_import(led: Ledger, mmr: Mmr, *extra: str, paths: bool = True):
    args = [LEDGER_BIN, "import", "mmr", "--config", str(led.config), "--database", mmr.pg.url()]
    if paths:
        args += ["--datastore-path", f"{mmr.ds_id}={mmr.ds_dir}"]
    return run_timed([*args, *extra], TIMEOUT)


def import_ok(led: Ledger, mmr: Mmr, paths: bool = True) -> tuple[dict, float]:
    p, took = run_import(led, mmr, paths=paths)
    return import_summary(p), took


# --- MMR's database and datastore, as MMR writes them ----------------------------------------------

@pytest.fixture(scope="module")
def mmr() -> Mmr:
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with pg_cluster(user="mmr", database="mmr", keep_log_in=WORK) as pg:
        summary(f"import mmr: PostgreSQL cluster ({pg.bindir}) up in "
                f"{time.monotonic() - t0:.2f} s")
        yield build_mmr(pg)


def build_mmr(pg: PgCluster) -> Mmr:
    con = pg_connect(pg)
    con.autocommit = True
    cur = con.cursor()
    for _name, _commit, sql in MMR_MIGRATIONS:
        cur.execute(sql)

    ds_dir = Path(tempfile.mkdtemp(prefix="mmr-media.", dir=WORK))
    ds_id, s3_id = unique_id(), unique_id()
    cur.execute(INSERT_DATASTORE, (ds_id, "file", str(ds_dir)))
    cur.execute(INSERT_DATASTORE, (s3_id, "s3", "s3://s3.example.org/mmr-media"))

    def store(data: bytes) -> str:
        """A blob written as MMR's file datastore writes it: object name = a unique id +
        `idv2fmt`, at <path>/<aa>/<bb>/<rest>; returns the location MMR records."""
        name = unique_id() + "idv2fmt"
        location = f"{name[0:2]}/{name[2:4]}/{name[4:]}"
        (ds_dir / location).parent.mkdir(parents=True, exist_ok=True)
        (ds_dir / location).write_bytes(data)
        return location

    now = int(time.time() * 1000)
    day = 86_400_000
    text = "Grüße aus Köln — 日本語のメモ\n".encode() * 50
    media = {
        "png": Media(HOME, unique_id(), noisy_image(160, 120, "PNG"), "image/png", "cat.png",
                     ALICE, now - 30 * day, last_access=now - 2 * day),
        "text": Media(HOME, unique_id(), text, "text/plain; charset=utf-8",
                      "résumé – 日本語 notes.txt", ALICE, now - 20 * day),
        "blob": Media(HOME2, unique_id(), os.urandom(200_001), "application/octet-stream", "",
                      BOB, now - 10 * day, last_access=now - day),
        # The same bytes uploaded again: MMR keeps one file for both rows.
        "text-again": Media(HOME2, unique_id(), text, "text/plain; charset=utf-8", "copy.txt",
                            BOB, now - 5 * day),
        "remote": Media(REMOTE, unique_id(), noisy_image(80, 60, "JPEG"), "image/jpeg",
                        "far.jpg", "", now - 3 * day),
        "quarantined": Media(HOME, unique_id(), noisy_image(50, 50, "PNG"), "image/png",
                             "reported.png", ALICE, now - 4 * day, quarantined=True),
        "pinned": Media(HOME2, unique_id(), noisy_image(70, 70, "PNG"), "image/png",
                        "keep.png", BOB, now - 6 * day, pinned=True),
    }
    media["png"].thumb = noisy_image(96, 96, "PNG")
    shared = None
    for name, m in media.items():
        if name == "text-again":
            m.location = shared
        else:
            m.location = store(m.data)
        if name == "text":
            shared = m.location
        m.datastore = ds_id
        cur.execute(INSERT_MEDIA, (m.origin, m.media_id, m.upload_name, m.content_type,
                                   m.user_id, sha256(m.data), len(m.data), m.created,
                                   m.quarantined, m.datastore, m.location))
        if m.last_access is not None:
            cur.execute(UPSERT_LAST_ACCESS, (sha256(m.data), m.last_access, m.last_access))
        if m.pinned:
            cur.execute(UPSERT_PURPOSE, (m.origin, m.media_id, "pinned", "pinned"))
    # A purpose that is not a pin.
    cur.execute(UPSERT_PURPOSE, (HOME, media["text"].media_id, "none", "none"))

    png = media["png"]
    cur.execute(INSERT_THUMBNAIL, (HOME, png.media_id, "image/png", 96, 96, "crop", False,
                                   sha256(png.thumb), len(png.thumb), now - 29 * day, ds_id,
                                   store(png.thumb)))
    animated = noisy_image(32, 32, "GIF")
    cur.execute(INSERT_THUMBNAIL, (HOME, png.media_id, "image/gif", 32, 32, "crop", True,
                                   sha256(animated), len(animated), now - 29 * day, ds_id,
                                   store(animated)))

    # The rows that must be skipped.
    skipped = {}
    gone = noisy_image(40, 40, "PNG")
    loc = store(gone)
    (ds_dir / loc).unlink()
    skipped["missing"] = (HOME, unique_id(), gone, ds_id, loc, sha256(gone), len(gone),
                          "No such file")
    data = os.urandom(5_000)
    skipped["bad-hash"] = (HOME, unique_id(), data, ds_id, store(data), sha256(b"other"),
                           len(data), "SHA-256")
    data = os.urandom(6_000)
    skipped["bad-size"] = (HOME2, unique_id(), data, ds_id, store(data), sha256(data),
                           len(data) + 1, f"has {len(data)} bytes, the row says {len(data) + 1}")
    data = os.urandom(7_000)
    s3_loc = unique_id() + "idv2fmt"
    s3_root = WORK / f"s3-root-{unique_id()}"
    (s3_root / "mmr-media").mkdir(parents=True)
    (s3_root / "mmr-media" / s3_loc).write_bytes(data)  # MMR's object name: its location
    skipped["s3"] = (HOME, unique_id(), data, s3_id, s3_loc, sha256(data), len(data),
                     f"MMR datastore {s3_id} is S3: configure its bucket as a datastore here")
    s3_media = (f"mxc://{HOME}/{skipped['s3'][1]}", data)
    out = {}
    for name, (origin, mid, data, ds, loc, digest, size, reason) in skipped.items():
        cur.execute(INSERT_MEDIA, (origin, mid, "x.bin", "application/octet-stream", ALICE,
                                   digest, size, now - day, False, ds, loc))
        out[name] = (f"mxc://{origin}/{mid}", reason)
    out["animated"] = (f"mxc://{HOME}/{png.media_id} thumbnail 32x32 crop", "animated")
    con.close()
    return Mmr(pg, ds_id, ds_dir, s3_id, media, out, s3_root, s3_media)


@dataclass
class Imported:
    led: Ledger
    first: dict
    second: dict
    third: dict


@pytest.fixture(scope="module")
def imported(mmr) -> Imported:
    led = new_ledger("mmr")
    first, took = import_ok(led, mmr)
    second, took2 = import_ok(led, mmr)
    # Without --datastore-path: the file datastore's path as MMR's `datastores` table has it.
    third, took3 = import_ok(led, mmr, paths=False)
    summary(f"import mmr: {first['imported']} media, {first['thumbnails']} thumbnails, "
            f"{first['bytes']} bytes in {took:.2f} s; again in {took2:.2f} s and {took3:.2f} s")
    return Imported(led, first, second, third)


# --- tests ---------------------------------------------------------------------------------------

def test_the_schema_is_mmrs(mmr):
    """The rows went through MMR's own schema (its user_stats trigger counted the uploads)."""
    con = pg_connect(mmr.pg)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'media' AND column_name = 'quarantined'")
            assert cur.fetchone()[0] == "boolean"
            cur.execute("SELECT count(*) FROM media")
            assert cur.fetchone()[0] == len(mmr.media) + 4
            cur.execute("SELECT uploaded_bytes FROM user_stats WHERE user_id = %s", (BOB,))
            bob = sum(len(m.data) for m in mmr.media.values() if m.user_id == BOB)
            assert cur.fetchone()[0] == bob
    finally:
        con.close()


def test_the_summary_counts_and_names_each_row(mmr, imported):
    out = imported.first
    want_bytes = sum(len(m.data) for m in mmr.media.values())
    assert (out["imported"], out["already_imported"], out["thumbnails"], out["quarantined"],
            out["pinned"], out["bytes"]) == (len(mmr.media), 0, 1, 1, 1, want_bytes), out
    got = {s["media"]: s["reason"] for s in out["skipped"]}
    assert len(out["skipped"]) == len(mmr.skipped), out["skipped"]
    for name, (what, reason) in mmr.skipped.items():
        assert what in got, (name, what, got)
        assert reason in got[what], (name, got[what])


def test_a_second_import_imports_nothing(mmr, imported):
    for out in (imported.second, imported.third):
        assert (out["imported"], out["already_imported"], out["thumbnails"],
                out["quarantined"], out["pinned"], out["bytes"]) == (0, len(mmr.media), 0, 0,
                                                                     0, 0), out
        assert sorted(s["media"] for s in out["skipped"]) == sorted(
            w for w, _ in mmr.skipped.values()), out["skipped"]


def test_the_log_names_mmr_and_the_quarantine_is_the_systems(mmr, imported):
    q = mmr.media["quarantined"]
    evs = events(imported.led, q.mxc)
    types = [e["type"] for e in evs]
    assert types.count("media.migrated.v1") == 1, types
    migrated = next(e for e in evs if e["type"] == "media.migrated.v1")
    body = migrated["event"]["MediaMigratedV1"]
    assert body["source"] == f"mmr {mmr.ds_id} media", body
    assert (body["uploader"], body["remote"], body["created_at_ms"]) == (ALICE, False, q.created)
    quarantine = [e for e in evs if e["type"] == "media.quarantined.v1"]
    assert len(quarantine) == 1, types
    act = quarantine[0]
    assert act["actor"] == "system", act
    body = act["event"]["MediaQuarantinedV1"]
    assert body["authority"] == "Import" and "matrix-media-repo" in body["reason"], body


def test_served_byte_identical_with_mmrs_metadata(mmr, imported):
    led = imported.led
    with serving(led) as base:
        for name, m in mmr.media.items():
            # media_info first (a download moves last_access_ts).
            home = m.origin if m.origin in (HOME, HOME2) else HOME
            r = http("GET", f"{base}{V1}/media/{m.origin}/{quote(m.media_id)}", token=led.secret,
                     headers={"Host": home})
            assert r.status == 200, (name, r.status, r.body[:300])
            info = r.json()["media_info"]
            local = m.origin != REMOTE
            want = {
                "media_id": m.media_id,
                "media_origin": None if local else m.origin,
                "user_id": m.user_id if local else None,
                "media_type": m.content_type,
                "media_length": len(m.data),
                "upload_name": m.upload_name or None,
                "created_ts": m.created,
                "last_access_ts": m.last_access or m.created,
                "quarantined_by": "system" if m.quarantined else None,
                "safe_from_quarantine": m.pinned if local else None,
                "sha256": sha256(m.data),
            }
            assert {k: info.get(k) for k in want} == want, (name, info)

        for name, m in mmr.media.items():
            server = m.origin
            r = http("GET", f"{base}/_matrix/client/v1/media/download/{server}/{m.media_id}",
                     token=led.token)
            if m.quarantined:
                matrix_error(r, 404, "M_NOT_FOUND")
                continue
            assert r.status == 200, (name, r.status, r.body[:300])
            assert r.body == m.data, name
            assert r.headers["content-type"].split(";")[0] == m.content_type.split(";")[0], (
                name, r.headers)

        png = mmr.media["png"]
        r = http("GET", f"{base}/_matrix/client/v1/media/thumbnail/{HOME}/{png.media_id}"
                        "?width=96&height=96&method=crop", token=led.token)
        assert r.status == 200, (r.status, r.body[:300])
        assert r.body == png.thumb, "not MMR's thumbnail"


def test_refusals(mmr):
    led = new_ledger("mmr-refused")
    cases = [
        ("--mmr-config", ["--mmr-config", str(WORK / "media-repo.yaml")], "--datastore-path"),
        ("no such directory", ["--datastore-path", f"{mmr.ds_id}={WORK}/nowhere"],
         "not a directory"),
        ("not ID=DIR", ["--datastore-path", "justanid"], "ID=DIR"),
    ]
    for what, extra, needle in cases:
        p, _ = run_import(led, mmr, *extra, paths=False)
        assert p.returncode != 0 and needle in p.stderr, (what, p.returncode, p.stderr[-800:])
    # A database without MMR's tables.
    url = mmr.pg.url().rsplit("/", 1)[0] + "/postgres"
    p = subprocess.run([LEDGER_BIN, "import", "mmr", "--config", str(led.config), "--database",
                        url], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode != 0 and "matrix-media-repo" in p.stderr, p.stderr[-800:]
    assert mmr.pg.password not in p.stderr + p.stdout
    assert not (led.root / "ledger").exists()


def test_an_s3_datastore_is_read_through_a_datastore_of_ours(mmr):
    """MMR's S3 datastore: its bucket (here s3s-fs, the suite's S3 server, objects named by
    MMR's location) configured in media-ledger as a read-only datastore, and given with
    --datastore-s3 MMR_ID=OURS: the row that was skipped without it is imported, byte-identical."""
    binary = Path(LEDGER_BIN).parents[2] / "target" / "tools" / "bin" / "s3s-fs"
    if not binary.exists():
        pytest.skip(f"s3s-fs not installed at {binary} (.ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port),
                             "--access-key", "mmr-ak", "--secret-key", "mmr-secret",
                             str(mmr.s3_root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "s3s-fs did not start"
                time.sleep(0.05)
        led = new_ledger("mmr-s3")
        with open(led.config, "a") as f:
            f.write(f"""
[[datastores]]
id = "mmr-s3"
type = "s3"
endpoint = "http://127.0.0.1:{port}"
bucket = "mmr-media"
access_key_id = "mmr-ak"
secret_access_key = "mmr-secret"
kinds = []
""")
        p, _ = run_import(led, mmr, "--datastore-s3", f"{mmr.s3_id}=mmr-s3")
        out = import_summary(p)
        mxc, data = mmr.s3_media
        assert mxc not in [x["media"] for x in out["skipped"]], out["skipped"]
        with serving(led) as base:
            r = download(base, led.token, mxc)
            assert r.status == 200 and r.body == data, (r.status, r.body[:200])
        # Unknown datastore of ours: refused before the ledger is touched.
        p, _ = run_import(led, mmr, "--datastore-s3", f"{mmr.s3_id}=nope")
        assert p.returncode != 0 and "nope" in p.stderr, p.stderr[-500:]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
