"""The reference server for the API benchmarks: a bare FastAPI app with one POST route returning small JSON.

Served exactly the way `vidgate serve` serves its app: one uvicorn process, default loop and HTTP
implementations (uvloop and httptools when installed), `log_level="warning", access_log=False`.

Run:  .venv/bin/python bench/bare_server.py --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/bare")
async def bare() -> JSONResponse:
    return JSONResponse({"status": "PROCESSING", "average_execution_time": 145000, "execution_duration": 1234})


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
