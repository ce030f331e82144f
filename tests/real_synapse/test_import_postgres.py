"""`media-ledger import synapse --database postgres://…` against Synapse's real PostgreSQL schema
on a real PostgreSQL (Debian's package; a throwaway cluster, see pg.py).

Media is uploaded straight to the suite's Synapse (images, so it makes thumbnails; one
quarantined and one protected with Synapse's admin API); a consistent copy of its SQLite
database (SQLite's backup API, Synapse keeps running) is ported to PostgreSQL with Synapse's
own `synapse_port_db`, which creates Synapse's PostgreSQL schema (native booleans, bigints)
and copies every row. Then the same media store is imported twice into two fresh media-ledger
data folders: once from the SQLite copy, once from PostgreSQL. Both imports must count the
same and skip nothing, both ledgers must record the same facts (the log compared entry by
entry, without what differs per run: seq, times, request ids), and the ledger imported from
PostgreSQL, served with no `cs_api` (every byte from the import), serves each media byte for
byte as Synapse does, with Synapse's own `media_info`.

Also: a wrong password, an unreachable port, a missing database and a database without
Synapse's tables are refused with a non-zero exit and a message naming the database, never
its password; a password with URL-special and non-ASCII characters, percent-encoded in the URL
or given as a `?password=` query parameter, connects.

The import reads the whole of Synapse's database, so it also brings the media other test
files stored at Synapse: counts are checked against the rows of the database copy, and the
media checked one by one are this file's own (its own users)."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import SERVER_NAME, SYNAPSE, matrix_error, mxc_parts, quote, summary
from importing import (
    CROP_SIZES, IMPORT_TIMEOUT, SYNAPSE_DIR, Ledger, Rows, as_booleans, backup_db, body_of,
    differences, download, events, free_port, fresh_ledger, import_summary, import_synapse_cmd,
    media_info, mxc_of, noisy_image, pg_connect, quarantine_and_protect, rows_of, run_timed,
    serving, sqlite_one, synapse_users, thumbnail, upload_plan,
)
from pg import PgCluster, pg_cluster

# In the suite's work folder: removed with it on success, kept with it on failure (with the
# PostgreSQL server's log and synapse_port_db's output).
WORK = SYNAPSE_DIR.parent / "import-postgres"
# The tables the importer reads, and so the ones whose rows must reach PostgreSQL.
MEDIA_TABLES = ["local_media_repository", "local_media_repository_thumbnails",
                "remote_media_cache", "remote_media_cache_thumbnails"]


# --- helpers ------------------------------------------------------------------------------------

def pg_rows(pg: PgCluster, sql: str, args=()) -> list:
    con = pg_connect(pg)
    try:
        with con.cursor() as cur:
            cur.execute(sql, args or None)  # None: a `%` in the SQL is no placeholder
            return cur.fetchall()
    finally:
        con.close()


def pg_one(pg: PgCluster, sql: str, args=()):
    return pg_rows(pg, sql, args)[0][0]


def new_ledger(name: str) -> Ledger:
    """A fresh data folder (see importing.fresh_ledger)."""
    return fresh_ledger(WORK, name, f"@pg-import-check:{SERVER_NAME}")


def run_import(led: Ledger, db) -> tuple[subprocess.CompletedProcess, float]:
    return run_timed(import_synapse_cmd(led, db), IMPORT_TIMEOUT)


def import_ok(led: Ledger, db) -> tuple[dict, float]:
    """Runs the importer to its end; its stdout is exactly one JSON object (the summary)."""
    p, took = run_import(led, db)
    return import_summary(p), took


# What differs between two runs recording the same facts: the position in the log, the clock,
# the request id. Everything else (the actor, the event with its content-addressed location)
# must be equal.
PER_RUN = ("seq", "recorded_at_ms", "request_id")


def facts(evs: list[dict]) -> Counter:
    """The log as a multiset of entries without their per-run fields (the import runs media
    in parallel: the order is not a fact), and without the run's own task events (they name
    the database read, which differs by design)."""
    return Counter(json.dumps({k: v for k, v in e.items() if k not in PER_RUN}, sort_keys=True)
                   for e in evs if not e["type"].startswith("import."))


# --- what Synapse holds, on PostgreSQL too --------------------------------------------------------

@dataclass
class Fixture:
    media: dict       # name -> Media
    info: dict        # name -> Synapse's media_info at the time of the copy
    tokens: dict      # name -> Synapse token
    users: dict       # name -> user id
    db: Path          # the SQLite copy (what both imports read, one directly, one ported)
    rows: Rows
    pg: PgCluster
    port_seconds: float


QUARANTINED, PROTECTED = "quarantined", "protected"


@pytest.fixture(scope="module")
def pg():
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with pg_cluster(keep_log_in=WORK) as cluster:
        summary(f"import synapse (postgres): PostgreSQL cluster ({cluster.bindir}) up in "
                f"{time.monotonic() - t0:.2f} s")
        yield cluster


def port_db(sqlite_db: Path, pg: PgCluster) -> float:
    """Synapse's own synapse_port_db: Synapse's PostgreSQL schema, then every row."""
    cfg = yaml.safe_load((SYNAPSE_DIR / "homeserver.yaml").read_text())
    cfg["database"] = pg.synapse_database()
    # synapse_port_db first runs Synapse's background updates on the new PostgreSQL schema
    # (~60 of them on a fresh one) with a pause before each batch (it asks for the pause
    # whatever sleep_enabled says): 1 s by default, a minute in all.
    cfg["background_updates"] = {"sleep_duration_ms": 1}
    conf = WORK / "homeserver-postgres.yaml"
    conf.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tool = Path(sys.executable).parent / "synapse_port_db"
    if not tool.exists():
        tool = Path(shutil.which("synapse_port_db") or "synapse_port_db")
    t0 = time.monotonic()
    p = subprocess.run([str(tool), "--sqlite-database", str(sqlite_db), "--postgres-config",
                        str(conf)], capture_output=True, text=True, timeout=300, cwd=WORK)
    took = time.monotonic() - t0
    (WORK / "synapse_port_db.log").write_text(p.stdout + "\n--- stderr\n" + p.stderr)
    assert p.returncode == 0, (p.returncode, p.stdout[-3000:], p.stderr[-5000:])
    return took


@pytest.fixture(scope="module")
def ported(pg) -> Fixture:
    tag = secrets.token_hex(3)
    users, tokens = synapse_users("pgimport", tag, "postgres import tests")

    plan = [
        # name, uploader, bytes, content type, upload name
        ("png", "alice", noisy_image(120, 90, "PNG"), "image/png", "gradient.png"),
        ("jpeg", "bob", noisy_image(160, 120, "JPEG"), "image/jpeg", "photo.jpg"),
        ("text", "alice", "Grüße aus Köln — 日本語のメモ\n".encode() * 40, "text/plain",
         "résumé – 日本語 notes.txt"),
        ("blob", "bob", os.urandom(300_001), "application/octet-stream", None),
        (QUARANTINED, "bob", noisy_image(100, 100, "PNG"), "image/png", "reported.png"),
        (PROTECTED, "alice", noisy_image(110, 110, "PNG"), "image/png", "keep-me.png"),
    ]
    media = upload_plan(plan, users, tokens)

    # What Synapse serves: each media's bytes (Synapse's own answer, not our upload) and the
    # thumbnails it generated at upload.
    for m in media.values():
        r = download(SYNAPSE, tokens["bob"], m.mxc)
        assert r.status == 200 and r.body == m.data, (m.mxc, r.status, r.body[:300])
        if m.content_type.startswith("image/"):
            for w, h in CROP_SIZES:
                r = thumbnail(SYNAPSE, tokens["bob"], m.mxc, w, h)
                assert r.status == 200, (m.mxc, w, h, r.status, r.body[:300])
                m.thumbnails[(w, h)] = r.body

    quarantine_and_protect(tokens, media[QUARANTINED], media[PROTECTED])

    # The copy: Synapse's media_info read before and after it until both agree (Synapse writes
    # last-access times in the background), and no background update pending in it
    # (synapse_port_db refuses a database with some).
    db = WORK / f"copy-{tag}" / "homeserver.db"
    deadline = time.monotonic() + 60
    while True:
        before = {n: media_info(SYNAPSE, tokens["mod"], m.mxc) for n, m in media.items()}
        backup_db(db)
        after = {n: media_info(SYNAPSE, tokens["mod"], m.mxc) for n, m in media.items()}
        pending = sqlite_one(db, "SELECT count(*) FROM background_updates")
        if before == after and not pending:
            break
        assert time.monotonic() < deadline, (
            f"no stable copy of Synapse's database in 60 s ({pending} background updates "
            f"pending, media_info changed: {before != after})")
        time.sleep(0.5)
    assert after[QUARANTINED]["quarantined_by"] == users["mod"], after[QUARANTINED]
    info = {n: as_booleans(i) for n, i in after.items()}
    assert info[PROTECTED]["safe_from_quarantine"] is True, info[PROTECTED]

    # synapse_port_db reads a copy of the copy (it opens the SQLite file with Synapse's own
    # store code): the SQLite import reads exactly the file that was ported, untouched.
    src = db.parent / "port-source.db"
    shutil.copyfile(db, src)
    took = port_db(src, pg)
    summary(f"import synapse (postgres): synapse_port_db in {took:.2f} s")
    return Fixture(media, info, tokens, users, db, rows_of(db), pg, took)


@dataclass
class Imports:
    sqlite: Ledger
    postgres: Ledger
    sqlite_summary: dict
    postgres_summary: dict


@pytest.fixture(scope="module")
def imports(ported) -> Imports:
    a, b = new_ledger("from-sqlite"), new_ledger("from-postgres")
    out_a, took_a = import_ok(a, ported.db)
    out_b, took_b = import_ok(b, ported.pg.url())
    summary(f"import synapse (postgres): {out_b['imported']} media, {out_b['thumbnails']} "
            f"thumbnails, {out_b['bytes']} bytes: from SQLite in {took_a:.2f} s, from "
            f"PostgreSQL in {took_b:.2f} s")
    return Imports(a, b, out_a, out_b)


# --- the port -------------------------------------------------------------------------------------

def test_synapse_port_db_made_synapses_postgres_schema_with_every_media_row(ported):
    pg = ported.pg
    # The database as Synapse requires it.
    assert pg_one(pg, "SELECT datcollate || '/' || datctype || '/' || "
                      "pg_encoding_to_char(encoding) FROM pg_database "
                      "WHERE datname = current_database()") == "C/C/UTF8"
    # Synapse's PostgreSQL schema (not SQLite's loose types carried over): native booleans,
    # 4- and 8-byte integers, the very shapes the importer must read.
    types = {(t, c): ty for t, c, ty in pg_rows(pg, """
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name LIKE '%media%'""")}
    want = {
        ("local_media_repository", "safe_from_quarantine"): "boolean",
        ("local_media_repository", "authenticated"): "boolean",
        ("local_media_repository", "created_ts"): "bigint",
        ("local_media_repository", "media_length"): "integer",
        ("local_media_repository_thumbnails", "thumbnail_width"): "integer",
        ("remote_media_cache", "media_length"): "integer",
    }
    assert {k: types.get(k) for k in want} == want, types
    for table in MEDIA_TABLES:
        want = sqlite_one(ported.db, f"SELECT count(*) FROM {table}")
        got = pg_one(pg, f"SELECT count(*) FROM {table}")
        assert got == want, (table, got, want)
    assert ported.rows.media >= len(ported.media) and ported.rows.thumbnails >= 2 * 4
    ids = {mxc_parts(m.mxc)[1] for m in ported.media.values()}
    on_pg = {r[0] for r in pg_rows(pg, "SELECT media_id FROM local_media_repository")}
    assert ids <= on_pg, ids - on_pg
    assert pg_one(pg, "SELECT quarantined_by FROM local_media_repository WHERE media_id = %s",
                  (mxc_parts(ported.media[QUARANTINED].mxc)[1],)) == ported.users["mod"]
    assert pg_one(pg, "SELECT safe_from_quarantine FROM local_media_repository "
                      "WHERE media_id = %s", (mxc_parts(ported.media[PROTECTED].mxc)[1],)) is True


# --- the two imports ------------------------------------------------------------------------------

def test_both_imports_count_the_same_and_skip_nothing(ported, imports):
    a, b, rows = imports.sqlite_summary, imports.postgres_summary, ported.rows
    assert b["skipped"] == [], b["skipped"]
    assert a["skipped"] == [], a["skipped"]
    counts = ("imported", "already_imported", "thumbnails", "quarantined", "pinned", "bytes")
    assert {k: b[k] for k in counts} == {k: a[k] for k in counts}, (a, b)
    assert b["imported"] == rows.media and b["already_imported"] == 0, (b, rows)
    assert b["thumbnails"] == rows.thumbnails, (b, rows)
    assert b["quarantined"] == rows.quarantined >= 1, (b, rows)
    assert b["pinned"] == rows.pinned >= 1, (b, rows)
    assert b["bytes"] == rows.bytes, (b, rows)


def test_both_ledgers_record_the_same_facts(ported, imports):
    ea, eb = events(imports.sqlite), events(imports.postgres)
    fa, fb = facts(ea), facts(eb)
    only_a, only_b = fa - fb, fb - fa
    assert not only_a and not only_b, {
        "only from SQLite": [json.loads(x) for x in list(only_a)[:5]],
        "only from PostgreSQL": [json.loads(x) for x in list(only_b)[:5]]}
    # And they are the facts of this file's media: each one migrated once, with its bytes.
    migrated = Counter(mxc_of(body_of(e)["media"]) for e in eb if e["type"] == "media.migrated.v1")
    for name, m in ported.media.items():
        assert migrated[m.mxc] == 1, (name, migrated[m.mxc])
    types = Counter(e["type"] for e in eb)
    assert types["media.migrated.v1"] == ported.rows.media, types
    assert types["thumbnail.generated.v1"] == ported.rows.thumbnails, types
    assert types["media.quarantined.v1"] >= 1 and types["media.attributes_set.v1"] >= 1, types


def test_the_postgres_import_serves_what_synapse_serves(ported, imports):
    led = imports.postgres
    with serving(led) as base:
        # media_info first (a download moves last_access_ts): field by field Synapse's own
        # answer. By design one difference: Synapse leaves last_access_ts null until a
        # download is written (in 60 s batches); the import takes the creation time for it.
        for name, m in ported.media.items():
            got = media_info(base, led.secret, m.mxc)
            want = dict(ported.info[name])
            if want["last_access_ts"] is None:
                want["last_access_ts"] = want["created_ts"]
            assert got == want, (name, differences(got, want))

        for name, m in ported.media.items():
            r = download(base, led.token, m.mxc)
            if name == QUARANTINED:
                matrix_error(r, 404, "M_NOT_FOUND")
                continue
            assert r.status == 200, (name, r.status, r.body[:300])
            assert r.body == m.data, name
            assert r.headers["content-type"].split(";")[0] == m.content_type, (name, r.headers)
            for (w, h), want in m.thumbnails.items():
                r = thumbnail(base, led.token, m.mxc, w, h)
                assert r.status == 200, (name, w, h, r.status, r.body[:300])
                assert r.body == want, (name, w, h, "not Synapse's thumbnail")


# --- refusals -------------------------------------------------------------------------------------

def test_a_wrong_password_or_an_unreachable_database_fails_without_showing_the_password(ported):
    pg = ported.pg
    wrong = secrets.token_urlsafe(18)
    closed = free_port()
    led = new_ledger("refused")
    cases = [
        ("wrong password", pg.url(password=wrong), f"127.0.0.1:{pg.port}"),
        ("unreachable port", pg.url(port=closed), f"127.0.0.1:{closed}"),
        ("no such database", pg.url().rsplit("/", 1)[0] + "/nosuchdb", "nosuchdb"),
    ]
    failures = []
    for what, url, needle in cases:
        p, took = run_import(led, url)
        text = p.stdout + p.stderr
        problems = []
        if p.returncode == 0:
            problems.append(f"exit 0, stdout {p.stdout.strip()[:300]!r}")
        if not p.stderr.strip():
            problems.append("no message on stderr")
        if needle and needle not in p.stderr:
            problems.append(f"stderr does not name {needle!r}")
        for secret in (wrong, pg.password):
            if secret in text:
                problems.append("the password is shown")
        if took > 30:
            problems.append(f"took {took:.1f} s")
        summary(f"import synapse (postgres) refused, {what}: exit {p.returncode}: "
                f"{p.stderr.strip()[-300:]!r}")
        if problems:
            failures.append((what, url.replace(pg.password, "***").replace(wrong, "***"),
                             problems, p.stderr[-800:]))
    assert failures == [], failures
    assert events(led) == []


def test_a_postgres_database_without_synapses_tables_is_refused(ported):
    """A reachable database that is not Synapse's (here the cluster's `postgres` database, which
    any user may connect to): nothing to import is an error, as for an SQLite file without
    Synapse's tables (test_import.py), not a successful import of nothing from the wrong
    place (a typo in the database name of the URL)."""
    pg = ported.pg
    led = new_ledger("not-synapse")
    url = pg.url().rsplit("/", 1)[0] + "/postgres"
    p, took = run_import(led, url)
    assert p.returncode != 0, (p.returncode, p.stdout[-500:], p.stderr[-1500:])
    assert f"127.0.0.1:{pg.port}/postgres" in p.stderr, p.stderr[-1500:]
    assert pg.password not in p.stdout + p.stderr
    assert took < 30, took
    assert events(led) == []


def test_a_password_with_url_special_characters_is_read_percent_decoded(ported, imports):
    """An operator's password has `@ : / ? # %` and non-ASCII in it: percent-encoded in the
    URL (RFC 3986, what libpq takes too), it connects and imports the same."""
    pg = ported.pg
    role = f"reader_{secrets.token_hex(3)}"
    pw = f"p@ss:w/rd?#%25 ü {secrets.token_hex(4)}"
    # A second login role that is a member of Synapse's: it reads Synapse's tables.
    pg.psql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{pw}' IN ROLE \"{pg.user}\"")
    url = f"postgres://{role}:{quote(pw)}@{pg.host}:{pg.port}/{pg.database}"
    led = new_ledger("special-password")
    p, _ = run_import(led, url)
    assert p.returncode == 0, (p.returncode, p.stderr[-1500:].replace(pw, "***"))
    assert pw not in p.stderr and quote(pw) not in p.stderr
    out = json.loads(p.stdout)
    counts = ("imported", "thumbnails", "quarantined", "pinned", "bytes", "skipped")
    assert {k: out[k] for k in counts} == {k: imports.postgres_summary[k] for k in counts}, out
    # The same password as a query parameter (the postgres crate's URL form takes any
    # connection option there, `password` too).
    url = f"postgres://{role}@{pg.host}:{pg.port}/{pg.database}?password={quote(pw)}"
    p, _ = run_import(new_ledger("query-password"), url)
    assert p.returncode == 0, (p.returncode, p.stderr[-1500:].replace(pw, "***"))
    out = json.loads(p.stdout)
    assert {k: out[k] for k in counts} == {k: imports.postgres_summary[k] for k in counts}, out


def test_a_wrong_password_given_as_a_query_parameter_is_not_shown(ported):
    pg = ported.pg
    wrong = secrets.token_urlsafe(18)
    url = f"postgres://{pg.user}@{pg.host}:{pg.port}/{pg.database}?password={wrong}"
    p, _ = run_import(new_ledger("query-password-refused"), url)
    assert p.returncode != 0, (p.stdout[-500:], p.stderr[-1500:])
    assert "password authentication failed" in p.stderr, p.stderr[-1500:]
    assert f"127.0.0.1:{pg.port}" in p.stderr, p.stderr[-1500:]
    assert wrong not in p.stdout + p.stderr, p.stderr[-1500:]
