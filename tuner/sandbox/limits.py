"""Resource limits applied to every sandboxed program.

One place for the defaults, so that the runner, the bootstrap and docs/sandbox.md agree: generous for benchmark
solutions (a few MB, milliseconds), small enough that a hostile program can't hurt the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-run limits; all sizes in MiB except ``max_output_bytes``."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    tmp_mb: int = 64
    max_processes: int = 16
    max_open_files: int = 256
    max_output_bytes: int = 1 << 20
    excerpt_bytes: int = 4096

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        for name in ("memory_mb", "file_size_mb", "tmp_mb", "max_processes", "max_open_files"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def cpu_seconds(self) -> int:
        """CPU-time limit: the wall-clock budget rounded up plus one second of slack (CPU <= wall for one
        thread; a multi-threaded spinner is stopped by whichever limit comes first)."""
        return int(math.ceil(self.timeout_s)) + 1

    def rlimits(self, nproc: int | None = None) -> list[tuple[str, int, int]]:
        """(resource name, soft, hard) triples for the bootstrap.

        ``nproc`` overrides ``max_processes`` when the count must include processes that already exist under
        the same uid (unprivileged runs share the caller's uid). The CPU hard limit is one second above the
        soft one so that the kernel first sends SIGXCPU (reported as a timeout) rather than a bare SIGKILL.
        """
        mib = 1 << 20
        n = nproc if nproc is not None else self.max_processes
        return [
            ("RLIMIT_AS", self.memory_mb * mib, self.memory_mb * mib),
            ("RLIMIT_CPU", self.cpu_seconds, self.cpu_seconds + 1),
            ("RLIMIT_FSIZE", self.file_size_mb * mib, self.file_size_mb * mib),
            ("RLIMIT_NPROC", n, n),
            ("RLIMIT_NOFILE", self.max_open_files, self.max_open_files),
            ("RLIMIT_CORE", 0, 0),
        ]
