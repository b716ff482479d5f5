"""The batching engine: one decode thread owns the model and decodes the waiting requests in batches.

Requests arrive from the event loop (`submit`) into a thread-safe queue. The decode thread takes the first one
waiting, then up to `max_batch_size` in all, waiting at most `max_wait_s` for more, and decodes them with one
`generate` call under the profile read last (`LiveProfile`). Requests that arrive meanwhile join the next batch. After
each committed block (`generate(on_block=...)`) every row's new text goes to its request at once, and a row whose
request is complete (end of answer, `max_tokens`, a stop string) or whose client went away is cancelled: it takes
no more forwards, and the other rows decode on, each exactly as it would alone (left-padded rows are independent;
tests/test_decoder_equivalence.py). A profile that samples (temperature > 0) decodes one request at a time: the
sampling noise of a batch is shared by its rows, so only a batch of one reproduces `generate` alone.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from ..config import DecodeConfig
from ..decoding import BlockEvent, generate
from ..errors import ServeError
from ..model import DiffusionLM
from .codec import Codec
from .live_profile import LiveProfile
from .metrics import Metrics
from .text import FinishReason, TextAssembler

log = logging.getLogger(__name__)


def max_prompt_tokens(max_seq_len: int, config: DecodeConfig) -> int:
    """The longest prompt a model of `max_seq_len` positions can decode under `config` (prompt + gen_length)."""
    return max_seq_len - config.gen_length


@dataclass(frozen=True)
class BatchOptions:
    max_batch_size: int = 16
    max_wait_s: float = 0.005

    def __post_init__(self) -> None:
        if isinstance(self.max_batch_size, bool) or not isinstance(self.max_batch_size, int) \
                or self.max_batch_size < 1:
            raise ServeError(f"max batch size must be a positive integer, got {self.max_batch_size!r}")
        if not 0 <= self.max_wait_s <= 60:
            raise ServeError(f"max wait must be between 0 and 60 s, got {self.max_wait_s!r}")


@dataclass(frozen=True)
class DecodeRequest:
    """What a request asks of the decoder, validated by the HTTP layer: ids, a lower `max_tokens`, stop strings."""

    prompt_ids: list[int]
    max_tokens: int | None = None  # None: the profile's gen_length
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    status: int
    code: str
    message: str


Update = TextDelta | Finished | Failed


class Ticket:
    """One submitted request: the decode thread pushes its updates, the event loop reads them and may cancel it."""

    def __init__(self, request: DecodeRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.arrived = time.monotonic()
        self._loop = loop
        self._updates: asyncio.Queue[Update] = asyncio.Queue()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """The client is gone: its row stops at the next block (a no-op once the request has finished)."""
        self._cancelled.set()

    async def next(self) -> Update:
        """The next update: text deltas, then one Finished or Failed."""
        return await self._updates.get()

    async def updates(self) -> AsyncIterator[Update]:
        """Every update, up to the Finished or Failed that ends them."""
        while True:
            update = await self.next()
            yield update
            if not isinstance(update, TextDelta):
                return

    def push(self, update: Update) -> None:
        try:
            self._loop.call_soon_threadsafe(self._updates.put_nowait, update)
        except RuntimeError:  # the event loop is closed: the server was forced to stop
            pass


class EngineStopped(Exception):
    """The engine drains and takes no more requests."""


@dataclass
class _Row:
    ticket: Ticket
    text: TextAssembler
    closed: bool = False


class Engine:
    """`submit` from the event loop; `start` / `stop` (which finishes every request taken) from anywhere."""

    def __init__(self, model: DiffusionLM, codec: Codec, profile: LiveProfile, options: BatchOptions,
                 metrics: Metrics):
        self.model, self.codec, self.profile, self.options, self.metrics = model, codec, profile, options, metrics
        self._queue: queue.Queue[Ticket] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, request: DecodeRequest) -> Ticket:
        if self._stopping.is_set():
            raise EngineStopped
        ticket = Ticket(request, asyncio.get_running_loop())
        self._queue.put(ticket)
        self.metrics.queue_depth.set(self._queue.qsize())
        return ticket

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dtune-decode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take no more requests, decode the ones waiting, and return when the decode thread has ended."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            self._decode(*batch)

    def _collect(self) -> tuple[list[Ticket], DecodeConfig] | None:
        """The next batch and the profile it decodes with (None once stopping with nothing left): the first request
        waiting, and as many more as arrive within max_wait_s, up to the batch size; requests whose client left
        meanwhile are dropped. The profile is read once here: a re-read applies from the next batch."""
        while True:
            try:
                first = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stopping.is_set():
                    return None
                continue
            config = self.profile.current.config
            limit = 1 if config.temperature > 0 else self.options.max_batch_size
            batch, deadline = [first], time.monotonic() + self.options.max_wait_s
            while len(batch) < limit:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.metrics.queue_depth.set(self._queue.qsize())
            for ticket in batch:
                if ticket.cancelled:
                    self.metrics.finished.labels("cancelled").inc()
            batch = [t for t in batch if not t.cancelled]
            if batch:
                return batch, config

    def _decode(self, batch: list[Ticket], config: DecodeConfig) -> None:
        limit = max_prompt_tokens(self.model.args.max_seq_len, config)
        end_ids = self.model.args.answer_end_ids
        rows: list[_Row] = []
        for ticket in batch:
            if len(ticket.request.prompt_ids) > limit:  # possible only if a re-read profile raised gen_length
                self._fail(ticket, 400, "context_length_exceeded",
                           f"the prompt has {len(ticket.request.prompt_ids)} tokens; with the profile's gen_length "
                           f"{config.gen_length} this model takes at most {limit}")
                continue
            max_tokens = min(ticket.request.max_tokens or config.gen_length, config.gen_length)
            rows.append(_Row(ticket, TextAssembler(self.codec.decode, end_ids, max_tokens, ticket.request.stop)))
        if not rows:
            return
        self.metrics.batch_size.observe(len(rows))
        t0 = time.perf_counter()
        try:
            result = generate(self.model, [r.ticket.request.prompt_ids for r in rows], config,
                              on_block=partial(self._on_block, rows))
        except Exception as exc:  # a bug or an out-of-memory: the batch's requests fail, the server goes on
            log.exception("decoding a batch of %d failed", len(rows))
            for row in rows:
                if not row.closed:
                    row.closed = True
                    self._fail(row.ticket, 500, "internal_error", f"decoding failed: {type(exc).__name__}: {exc}")
            return
        for row in rows:
            if not row.closed:
                self._deliver(row, row.text.close())
                self._finish(row)
        wall = time.perf_counter() - t0
        for nfe in result.row_nfe:
            self.metrics.forwards.observe(nfe)
        if wall > 0:
            self.metrics.tokens_per_second.set(sum(len(r.text.ids) for r in rows) / wall)

    def _on_block(self, rows: list[_Row], event: BlockEvent) -> list[int]:
        """Send each open row its new text; cancel the rows that are complete or whose client left."""
        cancel = []
        for i, row in enumerate(rows):
            if row.closed:
                continue
            if row.ticket.cancelled:
                row.closed = True
                self.metrics.finished.labels("cancelled").inc()
            else:
                if event.index == 0:
                    self.metrics.first_block.observe(time.monotonic() - row.ticket.arrived)
                self._deliver(row, row.text.feed(event.tokens[i].tolist()))
                if row.text.done:
                    self._finish(row)
            if row.closed and event.active[i]:
                cancel.append(i)
        return cancel

    def _deliver(self, row: _Row, text: str) -> None:
        if text:
            row.ticket.push(TextDelta(text))

    def _finish(self, row: _Row) -> None:
        row.closed = True
        reason = row.text.finish_reason or "length"
        tokens = len(row.text.ids)
        self.metrics.finished.labels(reason).inc()  # counted before the client can see the answer
        self.metrics.generated_tokens.inc(tokens)
        self.metrics.latency.observe(time.monotonic() - row.ticket.arrived)
        row.ticket.push(Finished(reason, len(row.ticket.request.prompt_ids), tokens))

    def _fail(self, ticket: Ticket, status: int, code: str, message: str) -> None:
        ticket.push(Failed(status, code, message))
        self.metrics.finished.labels("failed").inc()
