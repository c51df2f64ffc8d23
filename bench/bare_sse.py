"""The reference for the SSE fan-out benchmark: a bare Starlette app whose `GET /stream` holds a Server-Sent
Events stream open until `POST /fire`, then sends every open stream one event. Served as `vidgate serve` serves
its app (one uvicorn process, `log_level="warning"`, no access log).

Run:  .venv/bin/python bench/bare_sse.py --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

listeners: set[asyncio.Queue[bytes]] = set()


async def stream(request: Request) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        listeners.add(queue)
        try:
            yield b"retry: 2000\n\n"
            yield await queue.get()
        finally:
            listeners.discard(queue)

    return StreamingResponse(events(), media_type="text/event-stream")


async def fire(request: Request) -> JSONResponse:
    for queue in list(listeners):
        queue.put_nowait(b'id: 1\nevent: queued\ndata: {"status": "queued"}\n\n')
    return JSONResponse({"sent": len(listeners)})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/stream", stream), Route("/fire", fire, methods=["POST"]),
                        Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
