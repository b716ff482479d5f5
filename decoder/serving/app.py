"""The HTTP layer (FastAPI): OpenAI's completions and chat endpoints, `/v1/models`, `/health` and `/metrics`.

A request is parsed (`schema`), checked against the profile and the model (`policy`), encoded, and handed to the
engine; its answer comes back whole, or as server-sent events, one chunk per committed block. A client that goes
away cancels its request, whose row then stops at the next block. Every error is OpenAI's error body.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .engine import EngineStopped, Failed, Finished, TextDelta, Ticket
from .metrics import CONTENT_TYPE
from .policy import check_prompt, decode_request
from .responses import Reply, error_body, sse
from .schema import ChatRequest, CompletionRequest, RequestError, parse
from .service import Service


def create_app(service: Service) -> FastAPI:
    """The ASGI app of `service`; its lifespan starts the engine and, on shutdown, drains it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        undo = _on_sighup(service.profile.request_reload)
        try:
            yield
        finally:
            undo()
        await asyncio.to_thread(service.stop)  # a clean shutdown only: a forced one cancels the lifespan instead

    app = FastAPI(title="dtune", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    def refuse(status: int, body: dict) -> JSONResponse:
        service.metrics.errors.labels(str(status)).inc()
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return refuse(exc.status, error_body(exc.message, kind=exc.kind, param=exc.param, code=exc.code))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return refuse(exc.status_code, error_body(f"{request.method} {request.url.path}: {exc.detail}"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return refuse(500, error_body(f"internal error: {type(exc).__name__}", kind="server_error"))

    @app.get("/health")
    async def health() -> dict:
        loaded = service.profile.current
        return {"status": "ok", "model": service.name,
                "profile": {"source": loaded.source, "generation": loaded.generation, "loaded_at": loaded.loaded_at,
                            "decode": loaded.config.to_dict()}}

    @app.get("/v1/models")
    async def models() -> dict:
        loaded = service.profile.current
        return {"object": "list", "data": [{"id": service.name, "object": "model", "created": int(loaded.loaded_at),
                                            "owned_by": "dtune"}]}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse(CompletionRequest, await request.body())
        _check_model(service, body.model)
        ids = body.prompt if isinstance(body.prompt, list) else service.codec.encode_text(body.prompt)
        return await _answer(service, request, Reply("completions", service.name), body, ids, "prompt")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = parse(ChatRequest, await request.body())
        _check_model(service, body.model)
        if not service.codec.has_chat_template:
            raise RequestError(f"{service.name} has no chat template: use /v1/completions", code="invalid_value")
        if not body.messages:
            raise RequestError("messages is empty", param="messages", code="invalid_value")
        try:
            ids = service.codec.encode_chat([{"role": m.role, "content": m.content} for m in body.messages])
        except Exception as exc:  # the template's own checks (e.g. roles that must alternate) raise what they like
            raise RequestError(f"the chat template refused these messages: {exc}", param="messages",
                               code="invalid_value") from None
        return await _answer(service, request, Reply("chat", service.name), body, ids, "messages")

    return app


def _check_model(service: Service, name: str) -> None:
    if name != service.name:
        raise RequestError(f"model {name!r} is not served here; this server serves {service.name!r}", status=404,
                           param="model", code="model_not_found")


async def _answer(service: Service, request: Request, reply: Reply, body: CompletionRequest | ChatRequest,
                  ids: list[int], param: str) -> Response:
    config = service.profile.current.config
    args = service.model.args
    check_prompt(ids, vocab_size=args.vocab_size, max_seq_len=args.max_seq_len, config=config, param=param)
    decode = decode_request(body, ids, config)
    try:
        ticket = service.engine.submit(decode)
    except EngineStopped:
        raise RequestError("the server is shutting down", status=503, kind="server_error") from None
    service.metrics.requests.labels(reply.endpoint).inc()
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_stream(ticket, reply, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    answer = await _whole(request, ticket)
    if answer is None:  # the client left; nobody reads this
        return Response(status_code=499)
    text, end = answer
    if isinstance(end, Failed):
        raise RequestError(end.message, status=end.status, code=end.code,
                           kind="server_error" if end.status >= 500 else "invalid_request_error")
    return JSONResponse(reply.whole(text, end))


async def _whole(request: Request, ticket: Ticket) -> tuple[str, Finished | Failed] | None:
    """The whole answer, or None when the client disconnects first (its request is then cancelled)."""
    gone = asyncio.ensure_future(_disconnect(request))
    parts: list[str] = []
    try:
        while True:
            update = asyncio.ensure_future(ticket.next())
            await asyncio.wait({update, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not update.done():
                update.cancel()
                ticket.cancel()
                return None
            result = update.result()
            if not isinstance(result, TextDelta):
                return "".join(parts), result
            parts.append(result.text)
    finally:
        gone.cancel()
        ticket.cancel()  # a no-op once finished; frees the row if this handler is cancelled (drain timeout)


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(ticket: Ticket, reply: Reply, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a chunk per block's new text, then the finish reason, the usage if asked, [DONE].

    If the client disconnects, Starlette cancels this generator mid-await; `finally` then cancels the request."""
    try:
        if reply.chat:
            yield sse(reply.chunk("", role=True))
        async for update in ticket.updates():
            if isinstance(update, TextDelta):
                yield sse(reply.chunk(update.text))
            elif isinstance(update, Finished):
                yield sse(reply.chunk(None, update.finish_reason))
                if include_usage:
                    yield sse(reply.usage_chunk(update))
                yield sse("[DONE]")
            else:
                kind = "server_error" if update.status >= 500 else "invalid_request_error"
                yield sse(error_body(update.message, kind=kind, code=update.code))
    finally:
        ticket.cancel()


def _on_sighup(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on SIGHUP, where this thread may own signals (the main thread); returns the undo."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, callback)
    return lambda: loop.remove_signal_handler(signal.SIGHUP)
