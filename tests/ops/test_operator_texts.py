"""Self-hosted messages send users to the operator (VIDGATE_TOPUP_URL, VIDGATE_ACCOUNT_URL, or this server's
/docs), not to venice.ai; VIDGATE_VENICE_TEXTS=true gives Venice's own texts."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Api, api_for, t2v_body
from vidgate.errors import INSUFFICIENT_BALANCE_PREFIX, VENICE_INSUFFICIENT_BALANCE_MESSAGE
from vidgate.settings import load_settings

POOR_BODY = t2v_body(model="wan-2-7-text-to-video", resolution="1080p")


async def out_of_credit(api: Api) -> dict[str, str]:
    response = await api.post("/video/queue", POOR_BODY, await api.new_key(balance_usd=0.01))
    assert response.status_code == 402
    return response.json()


async def discovery(api: Api) -> dict[str, dict[str, str]]:
    response = await api.post("/video/queue", t2v_body())
    assert response.status_code == 402
    return response.json()["authOptions"]


async def test_by_default_users_are_sent_to_the_operator_and_this_servers_docs(api: Api) -> None:
    body = await out_of_credit(api)
    assert body["code"] == "INSUFFICIENT_BALANCE"
    assert body["error"].startswith(INSUFFICIENT_BALANCE_PREFIX) and "operator of this server" in body["error"]
    options = await discovery(api)
    assert options["apiKey"]["getKey"] == options["apiKey"]["docs"] == "http://testserver/docs"
    assert options["x402Wallet"]["docs"] == "http://testserver/docs#/x402/topUpX402Balance"
    assert "venice.ai" not in str(body) + str(options)
    assert (await api.client.get("/docs")).status_code == 200, "where the links point exists"


async def test_the_operators_urls_and_public_base(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", topup_url="https://billing.example.com/credit",
                             account_url="https://billing.example.com/keys",
                             public_base_url="https://videos.example.com/gen")
    async with api_for(settings) as api:
        body = await out_of_credit(api)
        assert body["error"] == (f"{INSUFFICIENT_BALANCE_PREFIX} Visit https://billing.example.com/credit to add "
                                 "credits.")
        options = await discovery(api)
        assert options["apiKey"]["getKey"] == "https://billing.example.com/keys"
        assert options["apiKey"]["docs"] == "https://videos.example.com/gen/docs"
        description = (await api.client.get("/openapi.json")).json()["info"]["description"]
        assert "https://billing.example.com/keys" in description and "https://billing.example.com/credit" in description


async def test_venice_texts_when_the_operator_asks_for_them(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", venice_texts=True, topup_url="https://ignored.example")
    async with api_for(settings) as api:
        assert (await out_of_credit(api))["error"] == (
            "Insufficient USD or Diem balance to complete request. Visit https://venice.ai/settings/api to add "
            "credits.") == VENICE_INSUFFICIENT_BALANCE_MESSAGE
        options = await discovery(api)
        assert options["apiKey"] == {"header": "Authorization: Bearer YOUR_API_KEY",
                                     "getKey": "https://venice.ai/settings/api",
                                     "docs": "https://docs.venice.ai/api-reference"}
        assert options["x402Wallet"]["docs"] == "https://docs.venice.ai/api-reference/endpoint/x402/top-up"
