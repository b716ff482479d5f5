"""A throw-away PostgreSQL server for tests: a fresh cluster in a temporary directory, on 127.0.0.1 and a free port.

It uses the server binaries of Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`: `initdb`,
`pg_ctl`), which `.ci/run` installs. PostgreSQL refuses to run as root, so as root the cluster belongs to the
`postgres` system user (or `nobody`), and its directory lives outside pytest's root-only temporary folders.
Authentication is `trust` on loopback only: nothing here outlives the test session, and `stop()` removes it all.

    server = PostgresServer.start()          # raises PostgresUnavailable (a reason to skip) without binaries
    url = server.create_database("study")    # postgresql+psycopg://dtune@127.0.0.1:PORT/study
    server.stop()
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
from pathlib import Path

USER = "dtune"  # the cluster's superuser role


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (or they can't start); the message says what to install."""


def find_bin_dir() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb and pg_ctl, or $DTUNE_PG_BIN."""
    candidates = [os.environ["DTUNE_PG_BIN"]] if os.environ.get("DTUNE_PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(p), reverse=True)
    for folder in candidates:
        path = Path(folder)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: Path, root: Path, port: int, owner: pwd.struct_passwd | None) -> None:
        self.bin_dir, self.root, self.port, self.owner = bin_dir, root, port, owner
        self.data = root / "data"
        self.log = root / "server.log"

    # ------------------------------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable("no server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or "
                                      "$DTUNE_PG_BIN")
        owner = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    owner = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if owner is None:
                raise PostgresUnavailable("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
        # $DTUNE_PG_ROOT (set by .ci/run) collects the clusters so CI can stop any a killed test left running.
        root = Path(tempfile.mkdtemp(prefix="dtune-pg-", dir=os.environ.get("DTUNE_PG_ROOT") or None))
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        server = cls(bin_dir, root, _free_port(), owner)
        try:
            server._run("initdb", "-D", str(server.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C",
                        "--no-sync")
            server.resume()
        except Exception:
            server.stop()
            raise
        return server

    def resume(self, attempts: int = 3) -> None:
        """Start (or restart) the server; a port taken meanwhile by someone else is swapped for a fresh one."""
        for attempt in range(attempts):
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
                          "start")
                return
            except PostgresUnavailable:
                if attempt == attempts - 1:
                    raise
                self.port = _free_port()

    def halt(self, mode: str = "fast") -> None:
        """Stop the server but keep its data (`resume()` brings it back): an outage, for tests."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            self.halt("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ use

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        owner = self.owner

        def demote() -> None:  # PostgreSQL refuses to run as root
            if owner is not None:
                os.setgid(owner.pw_gid)
                os.setuid(owner.pw_uid)

        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if owner is not None:
            env["HOME"] = str(self.root)
        proc = subprocess.run(cmd, cwd=self.root, env=env, preexec_fn=demote, capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()[-1000:]} {log}")


def wait_until(predicate, timeout_s: float, poll_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())
