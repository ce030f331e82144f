"""Helpers shared by the import tests of the real-Synapse suite (test_import.py,
test_import_postgres.py, test_import_mmr.py): a fresh media-ledger data folder and its config,
`media-ledger import …` run and its JSON summary read, the ledger's log (`media-ledger events`),
`media-ledger serve` on a data folder, and what Synapse holds (users, uploads, a consistent
copy of its SQLite database, its admin API's media_info)."""

import io
import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
from conftest import LEDGER_BIN, SERVER_NAME, SYNAPSE, http, mxc_parts, quote, register
from conftest import upload_to_synapse
from pg import PgCluster, free_port  # free_port: pg's, the one of the suite
from PIL import Image

SYNAPSE_DIR = Path(os.environ["RS_SYNAPSE_DIR"])
MEDIA_STORE = SYNAPSE_DIR / "media_store"
SYNAPSE_DB = SYNAPSE_DIR / "homeserver.db"
V1 = "/_synapse/admin/v1"
# The thumbnail sizes compared (Synapse's and media-ledger's default crop sizes: both serve the
# stored one for them; a scale thumbnail is stored by Synapse at the scaled image's own size).
CROP_SIZES = [(32, 32), (96, 96)]
IMPORT_TIMEOUT = 180
# What an import's summary (its stdout) always has.
SUMMARY_KEYS = ("imported", "already_imported", "thumbnails", "quarantined", "pinned", "bytes",
                "seconds", "skipped")


# --- media-ledger: a data folder, an import, its log, its server ------------------------------

@dataclass
class Ledger:
    """A fresh media-ledger data folder and its config (see `fresh_ledger`)."""
    root: Path
    port: int
    user: str  # the static token's user
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def config(self) -> Path:
        return self.root / "media-ledger.toml"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger"

    @property
    def media_dir(self) -> Path:
        return self.root / "media"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def fresh_ledger(work: Path, name: str, user: str, homeservers: tuple[str, ...] = (SERVER_NAME,),
                 cs_api: str | None = None) -> Ledger:
    """A fresh data folder `<name>.*` under `work` and its config: `homeservers` (the first the
    default), a file datastore, a static token of `user` and a shared secret. `cs_api` (on the
    default homeserver): none by default, for every ledger an import is checked on: no token of
    Synapse's is accepted and nothing is read through, every byte served comes from the import."""
    work.mkdir(parents=True, exist_ok=True)
    led = Ledger(Path(tempfile.mkdtemp(prefix=f"{name}.", dir=work)), free_port(), user)
    servers = ""
    for i, hs in enumerate(homeservers):
        servers += f'\n[[homeservers]]\nname = "{hs}"\n'
        if i == 0:
            servers += "default = true\n" + (f'cs_api = "{cs_api}"\n' if cs_api else "")
    led.config.write_text(f"""
[server]
bind = "127.0.0.1:{led.port}"
shutdown_grace_ms = 1000

[database]
path = "{led.ledger_path}"

[auth]
shared_secret = "{led.secret}"
admins = []

[[auth.static_tokens]]
token = "{led.token}"
user_id = "{led.user}"

[federation]
signing_key_path = "{led.root}/signing.key"
check_published_key = false
{servers}
[[datastores]]
id = "files"
type = "file"
path = "{led.media_dir}"
kinds = ["all"]
""")
    return led


def import_synapse_cmd(led: Ledger, db, store: Path = MEDIA_STORE, *extra: str) -> list[str]:
    """`media-ledger import synapse` of `db` (a file or a postgres:// URL) and `store`."""
    return [LEDGER_BIN, "import", "synapse", "--config", str(led.config), "--database", str(db),
            "--media-store", str(store), *extra]


def run_timed(cmd: list[str], timeout: float = IMPORT_TIMEOUT
              ) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `cmd` to its end (its output captured); returns it and how long it took."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def import_summary(p: subprocess.CompletedProcess) -> dict:
    """The summary of an import that ran to its end: its stdout is exactly one JSON object."""
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    try:
        out = json.loads(p.stdout)
    except ValueError:
        pytest.fail(f"stdout is not one JSON object: {p.stdout[-2000:]!r}")
    assert isinstance(out, dict), out
    for key in SUMMARY_KEYS:
        assert key in out, (key, out)
    return out


def events(led: Ledger, mxc: str | None = None) -> list[dict]:
    """The ledger's log (`media-ledger events`; only about `mxc` if given); no ledger folder
    yet: nothing recorded."""
    if not led.ledger_path.exists():
        return []
    args = [LEDGER_BIN, "events", "--config", str(led.config)]
    if mxc is not None:
        args += ["--media", mxc]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def body_of(e: dict) -> dict:
    return next(iter(e["event"].values()))


def mxc_of(m) -> str:
    return m if isinstance(m, str) else f"mxc://{m['origin']}/{m['media_id']}"


@contextmanager
def serving(led: Ledger):
    """`media-ledger serve` on the ledger until the block ends (SIGTERM, then waited for)."""
    log = open(led.root / "serve.log", "ab")
    p = subprocess.Popen([LEDGER_BIN, "serve", "--config", str(led.config)], stdout=log,
                         stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert p.poll() is None, (
                f"media-ledger serve exited ({p.returncode}): "
                f"{(led.root / 'serve.log').read_text()[-3000:]}")
            try:
                if http("GET", f"{led.url}/healthz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "media-ledger serve did not answer in 60 s"
            time.sleep(0.1)
        yield led.url
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


# --- the client and admin APIs (Synapse's, or media-ledger's at `base`) ----------------------

def download(base: str, token: str, mxc: str):
    server, media_id = mxc_parts(mxc)
    return http("GET", f"{base}/_matrix/client/v1/media/download/{server}/{media_id}",
                token=token)


def thumbnail(base: str, token: str, mxc: str, w: int, h: int, method: str = "crop"):
    server, media_id = mxc_parts(mxc)
    return http("GET", f"{base}/_matrix/client/v1/media/thumbnail/{server}/{media_id}"
                       f"?width={w}&height={h}&method={method}", token=token)


def media_info(base: str, token: str, mxc: str) -> dict:
    server, media_id = mxc_parts(mxc)
    r = http("GET", f"{base}{V1}/media/{server}/{quote(media_id)}", token=token)
    assert r.status == 200, (mxc, r.status, r.body[:300])
    return r.json()["media_info"]


def as_booleans(info: dict) -> dict:
    """Synapse's media_info with its booleans as booleans: on SQLite Synapse answers the
    columns as stored, `safe_from_quarantine: 1` and `authenticated: 1` (on PostgreSQL
    `true`); media-ledger answers `true`, as Synapse's own documentation shows it."""
    out = dict(info)
    for k in ("safe_from_quarantine", "authenticated"):
        if out.get(k) in (0, 1) and not isinstance(out[k], bool):
            out[k] = bool(out[k])
    return out


def differences(got: dict, want: dict) -> dict:
    return {k: {"media-ledger": got.get(k, "<absent>"), "synapse": want.get(k, "<absent>")}
            for k in sorted(set(got) | set(want))
            if got.get(k, "<absent>") != want.get(k, "<absent>")}


# --- what Synapse holds -----------------------------------------------------------------------

def noisy_image(width: int, height: int, fmt: str) -> bytes:
    """A unique image (random pixels, so no other media shares its bytes: Synapse quarantines
    by hash) with some structure for the thumbnailer."""
    rng = random.Random(secrets.randbits(64))
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 255) // width ^ rng.randrange(32), (y * 255) // height, rng.randrange(256))
                 for y in range(height) for x in range(width)])
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def synapse_login(user_id: str, password: str, device: str) -> str:
    """An access token from Synapse itself (not through the proxy)."""
    r = http("POST", f"{SYNAPSE}/_matrix/client/v3/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
        "password": password, "initial_device_display_name": device})
    assert r.status == 200, r.body
    return r.json()["access_token"]


def synapse_users(prefix: str, tag: str, device: str) -> tuple[dict, dict]:
    """alice, bob and mod (a Synapse admin), registered at Synapse as `<prefix>_<name>_<tag>`
    and logged in there: (name -> user id, name -> Synapse token)."""
    users, tokens = {}, {}
    for name, admin in [("alice", False), ("bob", False), ("mod", True)]:
        pw = secrets.token_urlsafe(12)
        users[name] = register(f"{prefix}_{name}_{tag}", pw, admin)
        tokens[name] = synapse_login(users[name], pw, device)
    return users, tokens


@dataclass
class Media:
    mxc: str
    data: bytes
    content_type: str
    upload_name: str | None
    uploader: str
    thumbnails: dict = field(default_factory=dict)  # (w, h) -> bytes Synapse served (crop)
    served_type: str = ""  # the Content-Type Synapse served it with

    @property
    def media_id(self) -> str:
        return mxc_parts(self.mxc)[1]


def upload_plan(plan: list[tuple], users: dict, tokens: dict) -> dict:
    """Each (name, uploader, bytes, content type, upload name) of `plan` uploaded straight to
    Synapse: name -> Media."""
    media = {}
    for name, who, data, ctype, filename in plan:
        mxc = upload_to_synapse(tokens[who], data, ctype, filename)
        assert mxc_parts(mxc)[0] == SERVER_NAME, mxc
        media[name] = Media(mxc, data, ctype, filename, users[who])
    return media


def quarantine_and_protect(tokens: dict, q: Media, p: Media) -> None:
    """Synapse's admin (mod) quarantines `q` and protects `p` with Synapse's admin API."""
    r = http("POST", f"{SYNAPSE}{V1}/media/quarantine/{SERVER_NAME}/{q.media_id}",
             token=tokens["mod"])
    assert r.status == 200, r.body
    r = http("POST", f"{SYNAPSE}{V1}/media/protect/{p.media_id}", token=tokens["mod"])
    assert r.status == 200, r.body
    assert download(SYNAPSE, tokens["alice"], q.mxc).status == 404  # Synapse refuses it now


def backup_db(dst: Path) -> Path:
    """A consistent copy of Synapse's live SQLite database (SQLite's online backup)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{SYNAPSE_DB}?mode=ro", uri=True)
    out = sqlite3.connect(dst)
    with out:
        src.backup(out)
    src.close()
    out.close()
    return dst


def query(db: Path, sql: str, args=()) -> list:
    """The rows `sql` reads from an SQLite database (opened read-only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def sqlite_one(db: Path, sql: str, args=()):
    return query(db, sql, args)[0][0]


@dataclass
class Rows:
    """What a Synapse database copy holds, as the import summary counts it."""
    local: int
    remote: int
    thumbnails: int
    quarantined: int
    pinned: int
    bytes: int

    @property
    def media(self) -> int:
        return self.local + self.remote


def rows_of(db: Path) -> Rows:
    one = lambda sql: sqlite_one(db, sql) or 0  # noqa: E731
    return Rows(
        local=one("SELECT count(*) FROM local_media_repository"),
        remote=one("SELECT count(*) FROM remote_media_cache"),
        thumbnails=one("SELECT count(*) FROM local_media_repository_thumbnails")
        + one("SELECT count(*) FROM remote_media_cache_thumbnails"),
        quarantined=one("SELECT count(*) FROM local_media_repository"
                        " WHERE quarantined_by IS NOT NULL")
        + one("SELECT count(*) FROM remote_media_cache WHERE quarantined_by IS NOT NULL"),
        pinned=one("SELECT count(*) FROM local_media_repository WHERE safe_from_quarantine"),
        bytes=one("SELECT sum(media_length) FROM local_media_repository")
        + one("SELECT sum(media_length) FROM remote_media_cache"),
    )


# --- PostgreSQL -------------------------------------------------------------------------------

def pg_connect(pg: PgCluster):
    """A psycopg2 connection to the cluster's database, as its owner."""
    return psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                            dbname=pg.database)
