"""A throwaway PostgreSQL cluster for tests: initdb into a fresh folder, start on a free port.

Usage::

    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg.postgres_cluster(databases=("airflow", "mlflow")) as cluster:
        cluster.url("airflow", driver="postgresql+psycopg2")  # Airflow's SQLAlchemy URL
        cluster.url("mlflow")                                   # MLflow tracking URI

PostgreSQL refuses to run as root, so the server binaries run as the ``postgres`` system user
(which needs this process to be root, or to be ``postgres`` itself). The cluster listens on
127.0.0.1 only, trusts local connections (nothing secret, nothing reachable from outside) and
runs with fsync off: it is deleted afterwards, durability buys nothing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_LAYOUT = Path("/usr/lib/postgresql")  # Debian/Ubuntu: /usr/lib/postgresql/<ver>/bin
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"


def _pg_config_bindir() -> Path | None:
    """``pg_config --bindir``: where this installation's programs are (None without it)."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        proc = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


def _debian_bin_dirs() -> list[Path]:
    """/usr/lib/postgresql/<ver>/bin for every installed major version, newest first."""
    if not DEBIAN_LAYOUT.is_dir():
        return []
    versions = [p for p in DEBIAN_LAYOUT.iterdir() if p.name.isdigit()]
    return [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]


def bin_dir_candidates() -> list[Path]:
    """Where to look, in order: $PG_BIN_DIR, ``pg_config --bindir``, the Debian layout."""
    found = [Path(os.environ["PG_BIN_DIR"])] if os.environ.get("PG_BIN_DIR") else []
    from_pg_config = _pg_config_bindir()
    if from_pg_config is not None:
        found.append(from_pg_config)
    return [*found, *_debian_bin_dirs()]


def find_bin_dir() -> Path | None:
    """The first candidate folder holding the server programs initdb and pg_ctl.

    ``pg_config`` alone can come from libpq-dev without a server; its folder is then passed
    over for the Debian layout (``make system-deps`` installs the ``postgresql`` package).
    """
    for folder in bin_dir_candidates():
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _run_as() -> str | None:
    """The user to run the server as, or None when this process cannot switch to one."""
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return None
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0 or me == SYSTEM_USER:
        return SYSTEM_USER
    return None


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (for pytest.skip), or None if it can."""
    if find_bin_dir() is None:
        return (
            f"PostgreSQL server binaries (initdb, pg_ctl) not found in "
            f"{[str(p) for p in bin_dir_candidates()] or '(no candidates)'} ($PG_BIN_DIR, "
            "pg_config --bindir, /usr/lib/postgresql/<ver>/bin); install them: `make "
            "system-deps` as root, or apt-get install -y postgresql"
        )
    if _run_as() is None:
        return (
            f"initdb refuses root and needs the '{SYSTEM_USER}' system user: run the tests as "
            f"root (to switch to it) or as '{SYSTEM_USER}'"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (requirements: psycopg2-binary)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    root: Path  # owned by the postgres user: data/, sockets/, server.log
    port: int
    bin_dir: Path
    user: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sockets"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str, *, driver: str = "postgresql") -> str:
        """A URL for ``database``; ``driver`` e.g. "postgresql+psycopg2" for SQLAlchemy."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            return f"<no server log: {error}>"

    def _bin(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        run_as = None if pwd.getpwuid(os.geteuid()).pw_name == self.user else self.user
        proc = subprocess.run(
            [str(self.bin_dir / name), *args],
            user=run_as,
            group=run_as,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,  # the server user must be able to read its working directory
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{name} {' '.join(args)} exited with {proc.returncode}; expected 0.\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}\n"
                f"server log:\n{self.log()[-3000:]}"
            )
        return proc

    def initdb(self) -> None:
        self._bin(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )

    def start(self, timeout: float = 60) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=127.0.0.1",
                # Throwaway cluster: durability costs time and buys nothing.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # Airflow's processes plus MLflow's pools stay well under this.
                "-c max_connections=200",
            ]
        )
        self._bin(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._bin("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def connect(self, database: str = "postgres"):  # -> psycopg2 connection
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, connect_timeout=10
        )

    def create_database(self, name: str) -> None:
        from psycopg2 import sql

        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def execute(self, database: str, statement: str, args: Sequence[object] = ()) -> None:
        """Run one statement outside a transaction (CREATE/DROP/ALTER DATABASE need that)."""
        conn = self.connect(database)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, tuple(args))
        finally:
            conn.close()

    def query(self, database: str, statement: str, args: Sequence[object] = ()) -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, tuple(args))
                return list(cur.fetchall())
        finally:
            conn.close()


def _wait_accepting(cluster: PostgresCluster, timeout: float = 30) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.connect().close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on port {cluster.port} did not accept connections within "
                    f"{timeout:.0f} s; server log:\n{cluster.log()[-3000:]}"
                ) from None
            time.sleep(0.2)


@contextlib.contextmanager
def postgres_cluster(databases: Sequence[str] = ()) -> Iterator[PostgresCluster]:
    """Start a fresh cluster with ``databases`` created; stop and delete it afterwards."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir = find_bin_dir()
    user = _run_as()
    assert bin_dir is not None and user is not None  # unavailable_reason() checked both
    # Not under pytest's tmp_path: that is private to root (mode 0700), and the server user
    # must reach its data folder. mkdtemp makes a fresh 0700 folder we then hand over.
    root = Path(tempfile.mkdtemp(prefix="recflow-pg-"))
    entry = pwd.getpwnam(user)
    (root / "sockets").mkdir()
    for path in (root, root / "sockets"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(root=root, port=_free_port(), bin_dir=bin_dir, user=user)
    try:
        cluster.initdb()
        cluster.start()
        _wait_accepting(cluster)
        for name in databases:
            cluster.create_database(name)
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
