"""Authentication, charging, refunds, the ledger, balance and rate-limit headers."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import Api, api_for, t2v_body
from vidgate.db import jobs, ledger
from vidgate.settings import load_settings

pytestmark = pytest.mark.both_backends  # the store suite runs on SQLite and PostgreSQL


async def balance_and_ledger(api: Api, key: str) -> tuple[int, int]:
    return api.balance_and_ledger(await api.account_of(key))


async def test_bad_key_is_401_authentication_failed(api: Api) -> None:
    for value in ("Bearer vg_nope_nope", "Bearer garbage", "Basic abc", "Bearer "):
        response = await api.client.post("/api/v1/video/queue", json=t2v_body(),
                                         headers={"Authorization": value})
        assert response.status_code == 401, value
        assert response.json() == {"error": "Authentication failed"}


async def test_revoked_key_is_401(api: Api) -> None:
    from vidgate.accounts.keys import revoke_api_key, split_key

    key = await api.new_key()
    parts = split_key(key)
    assert parts
    assert await api.ctx.db.write(lambda conn: revoke_api_key(conn, parts[0]))
    assert (await api.post("/video/queue", t2v_body(), key)).status_code == 401


@pytest.mark.parametrize("path", ["/video/queue", "/video/retrieve", "/video/complete"])
async def test_no_credentials_is_402_with_x402_discovery(api: Api, path: str) -> None:
    response = await api.post(path, t2v_body())
    assert response.status_code == 402
    body = response.json()
    assert body["x402Version"] == 2
    assert body["resource"]["url"] == f"http://testserver/api/v1{path}"
    assert [a["network"] for a in body["accepts"]] == ["eip155:8453", "solana"]
    assert all(a["amount"] == "10000000" for a in body["accepts"])
    challenge = body["extensions"]["sign-in-with-x"]["info"]
    assert challenge["domain"] == "api.venice.ai" and len(challenge["nonce"]) >= 16
    assert set(body["authOptions"]) == {"apiKey", "x402Wallet"}
    header = json.loads(base64.b64decode(response.headers["PAYMENT-REQUIRED"]))
    assert header["x402Version"] == 2 and header["accepts"] == body["accepts"]


async def test_quote_and_models_need_no_credentials(api: Api) -> None:
    assert (await api.post("/video/quote", {"model": "wan-2-7-text-to-video", "duration": "5s"})).status_code == 200
    assert (await api.client.get("/api/v1/models?type=video")).status_code == 200


async def test_queue_charges_the_quote_and_sets_the_balance_header(api: Api) -> None:
    key = await api.new_key(balance_usd=10)
    quote = (await api.post("/video/quote", t2v_body())).json()["quote"]
    response = await api.post("/video/queue", t2v_body(), key)
    assert response.status_code == 200
    assert response.headers["x-venice-balance-usd"] == "10.000000", "balance before the request"
    balance, total = await balance_and_ledger(api, key)
    assert balance == total == round((10 - quote) * 1_000_000)


async def test_insufficient_balance_is_402_and_stores_nothing(api: Api) -> None:
    key = await api.new_key(balance_usd=0.01)
    response = await api.post("/video/queue", t2v_body(model="wan-2-7-text-to-video", resolution="1080p"), key)
    assert response.status_code == 402
    body = response.json()
    assert body["code"] == "INSUFFICIENT_BALANCE"
    assert body["error"].startswith("Insufficient USD or Diem balance")
    account_id = await api.account_of(key)
    assert api.scalar(select(func.count()).select_from(jobs).where(jobs.c.account_id == account_id)) == 0
    assert await balance_and_ledger(api, key) == (10_000, 10_000)


async def test_concurrent_queues_exceeding_the_balance_never_overdraw(api: Api) -> None:
    body = t2v_body(model="wan-2-7-text-to-video", resolution="720p")
    price = (await api.post("/video/quote", body)).json()["quote"]
    key = await api.new_key(balance_usd=round(price * 10, 2))  # room for exactly 10
    responses = await asyncio.gather(*(api.post("/video/queue", body, key) for _ in range(25)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 10 and codes.count(402) == 15
    balance, total = await balance_and_ledger(api, key)
    assert balance == total == 0
    account_id = await api.account_of(key)
    charges = api.scalar(select(func.count()).select_from(ledger).where(
        ledger.c.kind == "CHARGE", ledger.c.account_id == account_id))
    assert charges == 10


async def test_failed_job_answers_500_and_is_refunded(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import vidgate.worker as worker_module

    class BrokenEngine:
        name = "broken"

        def render(self, spec: object, out_path: object, progress: object) -> None:
            raise RuntimeError("GPU on fire")

    monkeypatch.setattr(worker_module, "engine_for", lambda name, **kw: BrokenEngine())
    key = await api.new_key(balance_usd=5)
    queued = (await api.post("/video/queue", t2v_body(), key)).json()
    await api.run_worker(max_jobs=api.settings.max_attempts)
    response = await api.post("/video/retrieve", {"model": queued["model"], "queue_id": queued["queue_id"]}, key)
    assert response.status_code == 500
    assert response.json() == {"error": "Inference processing failed"}
    balance, total = await balance_and_ledger(api, key)
    assert balance == total == 5_000_000, "charge refunded"
    job = await api.ctx.store.get(queued["queue_id"])
    assert job is not None and job.attempts == api.settings.max_attempts


async def test_rate_limit_answers_429_with_headers(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", rate_limit_queue_per_min=3)
    async with api_for(settings) as api:
        key = await api.new_key()
        seen = [await api.post("/video/queue", t2v_body(), key) for _ in range(4)]
        assert [r.status_code for r in seen] == [200, 200, 200, 429]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in seen] == ["2", "1", "0", "0"]
        assert seen[3].json() == {"error": "Rate limit exceeded"}
        assert seen[0].headers["x-ratelimit-limit-requests"] == "3"
        assert int(seen[0].headers["x-ratelimit-reset-requests"]) > 1_700_000_000_000  # unix ms


async def test_every_response_carries_a_request_id(api: Api) -> None:
    response = await api.client.get("/api/v1/models?type=video")
    assert response.headers["cf-ray"]
