"""The flock helper behind the SQLite set-up locks: exclusive across processes, freed when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tuner.base import file_lock


def test_lock_path_sits_beside_sqlite_files_only(tmp_path):
    assert file_lock.lock_path_beside(f"sqlite:///{tmp_path}/s.db", ".x") == tmp_path / "s.db.x"
    assert file_lock.lock_path_beside("sqlite://", ".x") is None
    assert file_lock.lock_path_beside("sqlite:///:memory:", ".x") is None
    assert file_lock.lock_path_beside("postgresql+psycopg://u@127.0.0.1/db", ".x") is None


def test_a_second_process_waits_until_the_holder_dies(tmp_path):
    path = tmp_path / "db.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from tuner.base import file_lock
        with file_lock.held_lock(__import__("pathlib").Path({str(path)!r}), timeout_s=5) as held:
            print(held, flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        with file_lock.held_lock(path, timeout_s=0.3) as held:
            assert not held  # timed out: the caller goes on unlocked
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the flock
        holder.wait()
        with file_lock.held_lock(path, timeout_s=5) as held:
            assert held
    finally:
        holder.kill()
        holder.wait()
