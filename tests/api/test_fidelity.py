"""Wire fidelity found by trying real clients: the balance headers on every request that carries a valid
credential (SPEC §1 "Response headers"), and the SIWX message's URI bound to this server's origin (X402.md §2.4,
as the x402 SDK's validator and siwe's strict mode check it). Everything goes through the HTTP API."""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Api, api_for, t2v_body
from tests.test_siwx import DOMAIN, STATEMENT, Wallet, b64, fund, iso, siwe_text
from vidgate.settings import load_settings

BALANCE = "x-venice-balance-usd"
DIEM = "x-venice-balance-diem"
QUOTE = {"model": "wan-2.5-preview-text-to-video", "duration": "5s", "resolution": "480p", "aspect_ratio": "16:9"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def models(api: Api, **headers: str) -> httpx.Response:
    return await api.client.get("/api/v1/models", params={"type": "video"}, headers=headers)


# --- balance headers --------------------------------------------------------------------------------------------


async def test_models_with_a_valid_key_carries_the_accounts_balance(api: Api) -> None:
    key = await api.new_key(balance_usd=12.34)
    response = await models(api, **bearer(key))
    assert response.status_code == 200
    assert response.json()["data"]
    assert response.headers[BALANCE] == "12.340000"
    assert response.headers[DIEM] == "0.000000"  # SPEC lists it beside the USD balance; accounts hold no Diem


async def test_models_without_a_key_is_200_without_balance_headers(api: Api) -> None:
    response = await models(api)
    assert response.status_code == 200 and response.json()["data"]
    assert BALANCE not in response.headers and DIEM not in response.headers


@pytest.mark.parametrize("authorization", ["Bearer vg_not_a_key", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer"])
async def test_models_with_an_invalid_key_still_lists_without_balance(api: Api, authorization: str) -> None:
    anonymous = await models(api)
    response = await models(api, Authorization=authorization)
    assert response.status_code == 200
    assert response.json() == anonymous.json()
    assert BALANCE not in response.headers


async def test_models_balance_is_sent_on_its_400_too(api: Api) -> None:
    key = await api.new_key(balance_usd=3)
    response = await api.client.get("/api/v1/models", params={"type": "bogus"}, headers=bearer(key))
    assert response.status_code == 400
    assert response.headers[BALANCE] == "3.000000"


async def test_models_ignores_a_sign_in_header_and_keeps_its_nonce(api: Api) -> None:
    """/models is not a wallet route (OAS security: none or Bearer); the header's nonce stays usable."""
    wallet = Wallet()
    await fund(api, wallet.address, 5)
    header = wallet.header()
    response = await models(api, **{"SIGN-IN-WITH-X": header})
    assert response.status_code == 200 and BALANCE not in response.headers
    queued = await api.post("/video/queue", t2v_body(), headers={"SIGN-IN-WITH-X": header})
    assert queued.status_code == 200, queued.text


async def test_quote_with_a_valid_key_carries_the_balance(api: Api) -> None:
    key = await api.new_key(balance_usd=7.5)
    response = await api.post("/video/quote", QUOTE, key=key)
    assert response.status_code == 200, response.text
    assert response.headers[BALANCE] == "7.500000"


async def test_quote_without_or_with_a_bad_key_has_no_balance(api: Api) -> None:
    for key in (None, "vg_not_a_key"):
        response = await api.post("/video/quote", QUOTE, key=key)
        assert response.status_code == 200, response.text
        assert BALANCE not in response.headers


async def test_queue_retrieve_and_complete_with_a_key_carry_the_balance(api: Api) -> None:
    key = await api.new_key(balance_usd=20)
    queued = await api.post("/video/queue", t2v_body(), key=key)
    assert queued.status_code == 200 and queued.headers[BALANCE] == "20.000000"
    ident = {"model": "wan-2.5-preview-text-to-video", "queue_id": queued.json()["queue_id"]}
    after_charge = await api.post("/video/retrieve", ident, key=key)
    assert after_charge.status_code == 200
    assert float(after_charge.headers[BALANCE]) < 20  # the balance before *this* request: the charge is in it
    missing = {**ident, "queue_id": "nope"}
    for path in ("/video/retrieve", "/video/complete"):
        response = await api.post(path, missing, key=key)
        assert response.status_code == 404
        assert response.headers[BALANCE] == after_charge.headers[BALANCE]
        assert response.headers[DIEM] == "0.000000"


async def test_a_wallet_gets_the_balance_on_wallet_routes(api: Api) -> None:
    wallet = Wallet()
    await fund(api, wallet.address, 9)
    response = await api.client.get(f"/api/v1/x402/balance/{wallet.address}",
                                    headers={"SIGN-IN-WITH-X": wallet.header()})
    assert response.status_code == 200 and response.headers[BALANCE] == "9.000000"
    retrieved = await api.post("/video/retrieve", {"model": "wan-2.5-preview-text-to-video", "queue_id": "nope"},
                               headers={"SIGN-IN-WITH-X": wallet.header()})
    assert retrieved.status_code == 404 and retrieved.headers[BALANCE] == "9.000000"


# --- the SIWX message's URI -------------------------------------------------------------------------------------


def signed_pair(wallet: Wallet, good_uri: str, bad_uri: str) -> tuple[str, str]:
    """Two Form A headers for the same message (same nonce and times), differing only in the URI line."""
    nonce, issued = secrets.token_hex(16), iso(time.time())
    headers = []
    for uri in (bad_uri, good_uri):
        text = siwe_text(wallet.address, uri=uri, nonce=nonce, issued_at=issued)
        headers.append(b64({"address": wallet.address, "message": text, "signature": wallet.sign(text),
                            "chainId": 8453}))
    return headers[0], headers[1]


async def test_a_uri_on_another_origin_is_refused_and_the_right_uri_works(api: Api) -> None:
    wallet = Wallet()
    await fund(api, wallet.address, 5)
    bad, good = signed_pair(wallet, "http://testserver/api/v1/video/queue", "https://evil.example/api/v1/video/queue")
    refused = await api.post("/video/queue", t2v_body(), headers={"SIGN-IN-WITH-X": bad})
    assert refused.status_code == 401
    body = refused.json()
    assert body["code"] == "X402_SIGN_IN_DOMAIN_MISMATCH" and set(body) == {"error", "code"}
    assert "URI" in body["error"] and BALANCE not in refused.headers
    # The refusal did not consume the nonce: the same message, bound to this server, signs in.
    accepted = await api.post("/video/queue", t2v_body(), headers={"SIGN-IN-WITH-X": good})
    assert accepted.status_code == 200, accepted.text
    assert accepted.headers[BALANCE] == "5.000000"


async def test_uri_follows_the_public_base_url_when_set(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", public_base_url="https://videos.example.com/venice")
    async with api_for(settings) as api:
        wallet = Wallet()
        await fund(api, wallet.address, 5)
        # The request's own origin is not the public one, so it is refused; any path on the public origin works.
        request_origin, public = signed_pair(wallet, "https://videos.example.com/anything", "http://testserver/")
        response = await api.post("/video/queue", t2v_body(), headers={"SIGN-IN-WITH-X": request_origin})
        assert response.status_code == 401 and response.json()["code"] == "X402_SIGN_IN_DOMAIN_MISMATCH"
        response = await api.post("/video/queue", t2v_body(), headers={"SIGN-IN-WITH-X": public})
        assert response.status_code == 200, response.text


async def test_a_client_that_signs_the_servers_402_challenge_signs_in(api: Api) -> None:
    """What an x402 SDK client does: take the challenge's `info` from PAYMENT-REQUIRED, sign it (Form B), retry."""
    wallet = Wallet()
    await fund(api, wallet.address, 5)
    first = await api.post("/video/queue", t2v_body())
    assert first.status_code == 402
    challenge = json.loads(base64.b64decode(first.headers["PAYMENT-REQUIRED"]))["extensions"]["sign-in-with-x"]
    info = challenge["info"]
    assert info["domain"] == DOMAIN and info["uri"] == "http://testserver/api/v1/video/queue"
    fields = {**info, "address": wallet.address, "chainId": "eip155:8453", "type": "eip191"}
    text = siwe_text(wallet.address, uri=info["uri"], statement=info["statement"], nonce=info["nonce"],
                     issued_at=info["issuedAt"], expiration_time=info["expirationTime"])
    assert info["statement"] == STATEMENT
    response = await api.post("/video/queue", t2v_body(),
                              headers={"SIGN-IN-WITH-X": b64({**fields, "signature": wallet.sign(text)})})
    assert response.status_code == 200, response.text
