"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temporary directory, a loopback port.

PostgreSQL refuses to run as root; when the tests run as root (CI does), the cluster runs as the `postgres`
system user that Debian's package creates, in a directory handed to it. Each test gets its own database, made
from a template that is migrated once, so a test starts on an empty schema in milliseconds.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

REQUIRE_ENV = "VIDGATE_REQUIRE_POSTGRES"


def postgres_bin() -> Path | None:
    """The directory of `pg_ctl` (Debian keeps it out of PATH), newest major version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresCluster:
    bin_dir: Path
    root: Path
    port: int = field(default_factory=_free_port)
    _template_ready: bool = False
    _counter: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _as_owner(self) -> dict[str, object]:
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bin_dir / args[0]), *args[1:]], check=True, capture_output=True, text=True,
                       cwd=self.root, **self._as_owner())  # type: ignore[call-overload]

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            # Loopback only, socket in our own directory. No fsync (this data is thrown away and the machine does
            # not crash in a test), but every commit is written out before it is acknowledged, so a server
            # killed mid-run (the failure drills) loses nothing it confirmed.
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "full_page_writes = off\nmax_connections = 300\nshared_buffers = 64MB\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh database at vidgate's schema; returns its URL."""
        from vidgate import migrate

        if not self._template_ready:
            self._admin("CREATE DATABASE vidgate_template")
            migrate.upgrade(self.url("vidgate_template"))
            self._template_ready = True
        return self.empty_database(template="vidgate_template")

    def empty_database(self, template: str = "template0") -> str:
        """A new database (empty, or a copy of `template`); returns its URL."""
        self._counter += 1
        name = f"test_{os.getpid()}_{self._counter}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


def start_cluster() -> PostgresCluster | str:
    """A running cluster, or why there is none (the reason a skipped test shows)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        return "PostgreSQL binaries not found (Debian: apt-get install postgresql-15); the PostgreSQL suite is skipped"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the PostgreSQL cluster as"
    cluster = PostgresCluster(bin_dir, Path(tempfile.mkdtemp(prefix="vidgate-pg-")))
    cluster.init()
    cluster.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(cluster.url(), connect_timeout=2).close()
            return cluster
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def remove_cluster(cluster: PostgresCluster) -> None:
    try:
        cluster.stop("immediate")
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)
