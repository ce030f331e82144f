"""A throwaway PostgreSQL cluster for the real-Synapse suite (Debian's `postgresql` package,
installed by `.ci/deps`): `initdb` into a fresh folder under /tmp, `postgres` on a free port of
127.0.0.1 (unix sockets in that folder, no system service involved), one database made the
way Synapse requires (UTF8, C collation, from template0) owned by one password-protected user.
Stopped and removed at the end.

PostgreSQL refuses to run as root: when the suite runs as root (as in CI), the cluster's
programs run as the `postgres` system user (created by the Debian package; set in the child as
`runuser -u postgres` would), and the folder is theirs; otherwise they run as the current
user.

The server binaries are looked for in $RS_PG_BIN, then /usr/lib/postgresql/<newest>/bin (where
Debian puts them, off PATH), then on PATH."""

import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


def pg_bindir() -> Path:
    if os.environ.get("RS_PG_BIN"):
        return Path(os.environ["RS_PG_BIN"])

    def version(p: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", Path(p).parent.parent.name))

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL's initdb was not found: install Debian's `postgresql` "
                       "package (.ci/deps does) or set RS_PG_BIN to its bin folder")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@dataclass
class PgCluster:
    root: Path        # the cluster's folder (data/, the socket, postgres.log)
    bindir: Path
    port: int
    user: str
    password: str
    database: str
    host: str = "127.0.0.1"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, password: str | None = None, port: int | None = None) -> str:
        """postgres://user:password@127.0.0.1:port/database (the real password unless given)."""
        pw = self.password if password is None else password
        return (f"postgres://{quote(self.user, safe='')}:{quote(pw, safe='')}@{self.host}:"
                f"{port or self.port}/{quote(self.database, safe='')}")

    def synapse_database(self) -> dict:
        """The `database` section of a Synapse config pointing at this cluster."""
        return {"name": "psycopg2", "args": {
            "user": self.user, "password": self.password, "database": self.database,
            "host": self.host, "port": self.port, "cp_min": 1, "cp_max": 5}}

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs `sql` as the cluster's superuser over the unix socket; returns the rows (-At)."""
        p = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", database,
             "-c", sql],
            capture_output=True, text=True, timeout=60, cwd=self.root)
        assert p.returncode == 0, (sql, p.stdout, p.stderr)
        return p.stdout


def _as_owner() -> dict:
    """Popen arguments running a program as the `postgres` system user when we are root
    (PostgreSQL refuses root): its uid, its group and no other group, set in the child before
    exec (what `runuser -u postgres` does, with the program staying our own child: signals
    reach it, and we reap it)."""
    if os.geteuid() == 0:
        return {"user": "postgres", "group": "postgres", "extra_groups": []}
    return {}


_ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_ENV,
                       **_as_owner())
    assert p.returncode == 0, (cmd, p.returncode, p.stdout[-3000:], p.stderr[-3000:])


@contextmanager
def pg_cluster(user: str = "synapse", database: str = "synapse",
               keep_log_in: Path | None = None):
    """A running throwaway cluster with `database` owned by `user` (a random password); stopped
    and removed when the block ends. `keep_log_in`: a folder the server's log is copied to at
    the end (for a failed run's post-mortem)."""
    bindir = pg_bindir()
    # Under /tmp (not the suite's 0700 work folder): the postgres user must reach it. Short,
    # too: the unix socket's path has to fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ml-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    cluster = PgCluster(root, bindir, free_port(), user, secrets.token_urlsafe(18), database)
    server = None
    try:
        # Speed over durability (a throwaway): no fsync at initdb or later.
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
              "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
              "--no-instructions"], cwd=root)
        # The server as our child (not daemonized by pg_ctl): stopped with a signal, reaped
        # by us (a daemon would be left to an init that may not reap it).
        with open(cluster.log, "ab") as log:
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(cluster.port),
                 "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
                env=_ENV, **_as_owner())
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-U", "postgres",
                                    "-h", str(root), "-p", str(cluster.port)], timeout=30)
            if ready.returncode == 0:
                break
            assert server.poll() is None, (
                f"postgres exited ({server.returncode}): {cluster.log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, (
                f"postgres not ready in 60 s: {cluster.log.read_text()[-3000:]}")
            time.sleep(0.1)
        cluster.psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{cluster.password}'")
        # What Synapse requires of its database (docs/postgres.md): UTF8 and C collation.
        cluster.psql(f"CREATE DATABASE \"{database}\" OWNER \"{user}\" ENCODING 'UTF8' "
                     "LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0")
        yield cluster
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # fast shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.send_signal(signal.SIGQUIT)  # immediate shutdown
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        if keep_log_in is not None and cluster.log.exists():
            keep_log_in.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cluster.log, keep_log_in / "postgres.log")
        shutil.rmtree(root, ignore_errors=True)
