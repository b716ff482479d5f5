"""Run the server: bind the address, check the profile against the checkpoint, load the model, serve with uvicorn.

Everything that can be wrong with the command (the address, the device, the checkpoint, the profile) fails before
the weights load, as a `DecoderError` the CLI prints in one line. SIGINT / SIGTERM stop accepting connections,
let every request in flight finish (a second Ctrl-C forces the exit), drain the engine and return 0. SIGHUP
re-reads the profile (`--reload-interval` does it on a schedule too).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from types import FrameType

import uvicorn

from ..errors import ServeError
from ..loading import inspect_checkpoint, load_model, resolve_device
from .app import create_app
from .engine import BatchOptions
from .metrics import Metrics
from .service import Service, open_profile


@dataclass(frozen=True)
class ServeOptions:
    model: str
    profile: str
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    name: str | None = None  # the model name requests give; default `model`
    batch: BatchOptions = field(default_factory=BatchOptions)
    device: str | None = None
    dtype: str | None = None
    allow_model_mismatch: bool = False
    reload_interval_s: float | None = None
    drain_timeout_s: float | None = None  # None: wait for every request in flight
    access_log: bool = True
    log_level: str = "info"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, not yet listening (asyncio listens once the app is ready): a taken port or an
    unknown host fails here, before the model loads, and --port 0 knows its port at once."""
    if not 0 <= port <= 65535:
        raise ServeError(f"port must be in 0-65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ServeError(f"can't listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"can't listen on {host}:{port}: {exc.strerror}") from None
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn's server, except that a SIGINT / SIGTERM that drained cleanly ends with exit 0: uvicorn re-raises
    the signal after its shutdown, which kills the process (SIGTERM) or raises KeyboardInterrupt (SIGINT)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
        else:
            self.should_exit = True


def serve(options: ServeOptions) -> int:
    """Serve until SIGINT / SIGTERM; 0 after a clean drain. A second Ctrl-C ends the process at once (exit 1)."""
    sock = bind(options.host, options.port)
    # A models:/ profile is downloaded at start and at every re-read: no MLflow progress bar on the server's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        resolve_device(options.device)
        metrics = Metrics()
        profile = open_profile(options.profile, inspect_checkpoint(options.model), metrics,
                               allow_mismatch=options.allow_model_mismatch,
                               reload_interval_s=options.reload_interval_s)
        model, tokenizer = load_model(options.model, device=options.device, dtype=options.dtype)
        service = Service.create(model, tokenizer, profile, metrics, name=options.name or options.model,
                                 options=options.batch)
        server = DrainingServer(uvicorn.Config(create_app(service), log_level=options.log_level,
                                               access_log=options.access_log,
                                               timeout_graceful_shutdown=options.drain_timeout_s))
        _log_to_stderr(options.log_level)
        host, port = sock.getsockname()[:2]
        batch = options.batch
        every = f" and every {options.reload_interval_s:g} s" if options.reload_interval_s else ""
        print(f"serving {service.name} with profile {options.profile} on http://{host}:{port} (max batch "
              f"{batch.max_batch_size}, max wait {batch.max_wait_s * 1000:g} ms; SIGHUP{every} re-reads the "
              "profile)", file=sys.stderr, flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.force_exit:  # a second Ctrl-C: don't wait for the block the decode thread is in to end
        print("forced exit: requests in flight were dropped", file=sys.stderr, flush=True)
        os._exit(1)
    return 0


def _log_to_stderr(level: str) -> None:
    """This package's log lines (profile re-reads, failed batches) on stderr, as uvicorn writes its own."""
    logger = logging.getLogger("decoder.serving")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


class BackgroundServer:
    """A server on a thread of this process, for tests and notebooks: `with BackgroundServer(service) as url:`.

    Signals stay with the main thread (no SIGHUP re-read); leaving the block drains and stops it."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0):
        self._sock = bind(host, port)
        self._server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="dtune-http", daemon=True)
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> str:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServeError("the server thread ended during start-up (see its log)")
            self._thread.join(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()
