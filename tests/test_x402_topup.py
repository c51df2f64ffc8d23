"""`POST /api/v1/x402/top-up` end to end: signed EIP-3009 authorizations, a real local facilitator over HTTP,
and the ledger read back from the database."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from openapi_schema_validator import OAS30Validator
from sqlalchemy import select

from tests.conftest import Api, api_for
from tests.test_openapi_contract import assert_matches_schema, deref, spec
from tests.x402_facilitator import LocalFacilitator, eip3009_typed_data
from vidgate.accounts import payments
from vidgate.accounts.ledger import balance_micros, find_account
from vidgate.db import ledger, x402_payments
from vidgate.settings import load_settings

pytestmark = pytest.mark.both_backends  # the store suite runs on SQLite and PostgreSQL

TOP_UP = "/api/v1/x402/top-up"
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
RECEIVER = Account.create().address
BASE = "eip155:8453"
SOLANA = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
FIVE_USD, TEN_USD = 5_000_000, 10_000_000
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# --- signing ----------------------------------------------------------------------------------------------------


def sign(payer: LocalAccount, value: int, *, to: str = RECEIVER, signer: LocalAccount | None = None,
         valid_after: int | None = None, valid_before: int | None = None, asset: str = USDC,
         chain_id: int = 8453, nonce: str | None = None) -> dict[str, Any]:
    """`{signature, authorization}` for an EIP-3009 transfer of `value` USDC base units."""
    now = int(time.time())
    authorization = {
        "from": payer.address, "to": to, "value": str(value),
        "validAfter": str(now - 60 if valid_after is None else valid_after),
        "validBefore": str(now + 600 if valid_before is None else valid_before),
        "nonce": nonce or "0x" + os.urandom(32).hex(),
    }
    typed = eip3009_typed_data(name="USD Coin", version="2", chain_id=chain_id, asset=asset,
                               authorization=authorization)
    signature = Account.sign_typed_data((signer or payer).key, full_message=typed).signature.to_0x_hex()
    return {"signature": signature, "authorization": authorization}


def b64(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def v2_header(inner: dict[str, Any], *, network: str = BASE, asset: str = USDC, pay_to: str = RECEIVER,
              scheme: str = "exact", amount: str = "5000000") -> str:
    """A PAYMENT-SIGNATURE value: an x402 v2 PaymentPayload, `accepted` copied from the 402's Base entry."""
    return b64({
        "x402Version": 2,
        "resource": {"url": "http://testserver/api/v1/x402/top-up", "description": "top-up",
                     "mimeType": "application/json"},
        "accepted": {"scheme": scheme, "network": network, "amount": amount, "asset": asset, "payTo": pay_to,
                     "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"}},
        "payload": inner,
    })


def v1_header(inner: dict[str, Any], *, network: str = "base", version: int = 1) -> str:
    """An x402 v1 payload (`X-PAYMENT`); with version=2 it is what Venice's npm `createPaymentHeader` example
    sends."""
    return b64({"x402Version": version, "scheme": "exact", "network": network, "payload": inner})


def decode(header: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(header, validate=True))


# --- fixtures and readers ---------------------------------------------------------------------------------------


@pytest.fixture
def facilitator() -> Iterator[LocalFacilitator]:
    fac = LocalFacilitator()
    fac.start()
    yield fac
    fac.stop()


async def settle_pending(timeout: float = 15) -> None:
    pending = payments.pending_settlements()
    if pending:
        await asyncio.wait(pending, timeout=timeout)


@pytest.fixture
async def top(tmp_path: Path, facilitator: LocalFacilitator) -> AsyncIterator[Api]:
    settings = load_settings(data_dir=tmp_path / "data", x402_facilitator_url=facilitator.url,
                             x402_pay_to=RECEIVER, x402_settle_timeout_seconds=1)
    async with api_for(settings) as api:
        yield api
        await settle_pending()


@pytest.fixture
def payer() -> LocalAccount:
    return Account.create()


async def post(api: Api, header: str | None, name: str = "PAYMENT-SIGNATURE") -> httpx.Response:
    headers = {name: header} if header is not None else {}
    response = await api.client.post(TOP_UP, headers=headers)
    assert_top_up_schema(response)
    return response


def assert_top_up_schema(response: httpx.Response) -> None:
    """Documented statuses against their own schema; 409/502/503/504 (SPEC §7 and venice-x402, not in the
    OpenAPI file) against the route's documented error document."""
    documented = spec()["paths"]["/x402/top-up"]["post"]["responses"]
    if str(response.status_code) in documented:
        assert_matches_schema("/x402/top-up", "post", response)
        return
    schema = deref(documented["400"]["content"]["application/json"]["schema"])
    errors = list(OAS30Validator(schema).iter_errors(response.json()))
    assert not errors, f"{response.status_code}: {errors[0].message}"


def wallet_state(api: Api, wallet: str) -> tuple[int | None, list[int]]:
    """(the account's balance, its TOP_UP amounts), read straight from the database."""
    def read(conn: Any) -> tuple[int | None, list[int]]:
        account_id = find_account(conn, wallet)
        if account_id is None:
            return None, []
        top_ups = conn.execute(select(ledger.c.amount_micros)
                               .where((ledger.c.account_id == account_id) & (ledger.c.kind == "TOP_UP"))).scalars()
        return balance_micros(conn, account_id), list(top_ups)

    return api.ctx.db.read_now(read)


def payment_rows(api: Api) -> list[Any]:
    return api.ctx.db.read_now(lambda conn: list(conn.execute(select(x402_payments))))


def assert_error(response: httpx.Response, status: int, code: str, reason: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert body["message"]
    if reason is not None:
        assert body["details"]["reason"] == reason, body
    return body


def assert_nothing_happened(api: Api, facilitator: LocalFacilitator, wallet: str) -> None:
    assert facilitator.paths() == []
    assert payment_rows(api) == []
    assert wallet_state(api, wallet) == (None, [])


# --- discovery --------------------------------------------------------------------------------------------------


async def test_no_payment_header_gives_402_with_requirements(top: Api) -> None:
    response = await post(top, None)
    assert response.status_code == 402
    body = response.json()
    assert body["x402Version"] == 2
    base, solana = body["accepts"]
    assert base == {"scheme": "exact", "network": BASE, "asset": USDC, "amount": "5000000", "payTo": RECEIVER,
                    "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"}}
    assert solana["network"] == SOLANA and solana["amount"] == "5000000" and "feePayer" in solana["extra"]

    required = decode(response.headers["PAYMENT-REQUIRED"])
    assert required["x402Version"] == 2
    assert required["accepts"] == body["accepts"]
    assert required["resource"]["url"] == "http://testserver/api/v1/x402/top-up"
    assert required["error"]


async def test_discovery_works_without_a_configured_receiver_but_payments_are_refused(api: Api,
                                                                                       payer: LocalAccount) -> None:
    assert (await post(api, None)).status_code == 402
    response = await post(api, v2_header(sign(payer, TEN_USD, to="0x" + "0" * 40), pay_to="0x" + "0" * 40))
    assert_error(response, 503, "X402_NOT_CONFIGURED")


# --- success ----------------------------------------------------------------------------------------------------


async def test_top_up_credits_the_wallet(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    inner = sign(payer, TEN_USD)
    response = await post(top, v2_header(inner))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["walletAddress"] == payer.address.lower()
    assert data["amountCredited"] == 10
    assert data["newBalance"] == 10
    assert data["paymentId"].startswith("x402-")

    settlement = decode(response.headers["PAYMENT-RESPONSE"])
    assert settlement["success"] is True
    assert settlement["network"] == BASE
    assert settlement["payer"] == payer.address
    assert settlement["transaction"].startswith("0x") and len(settlement["transaction"]) == 66

    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])
    (row,) = payment_rows(top)
    assert (row.id, row.status, row.transaction) == (data["paymentId"], "SETTLED", settlement["transaction"])
    assert row.authorization_nonce == inner["authorization"]["nonce"]

    # The facilitator saw verify, then settle, each with a body it accepted.
    assert facilitator.paths() == ["/verify", "/settle"]
    assert facilitator.problems() == []
    sent = facilitator.calls[0].body
    assert sent["x402Version"] == 2
    assert sent["paymentRequirements"]["amount"] == str(TEN_USD)
    assert sent["paymentRequirements"]["payTo"] == RECEIVER
    assert sent["paymentPayload"]["payload"]["authorization"]["from"] == payer.address


async def test_second_top_up_adds_to_the_same_account(top: Api, payer: LocalAccount) -> None:
    assert (await post(top, v2_header(sign(payer, FIVE_USD)))).status_code == 200
    response = await post(top, v2_header(sign(payer, 7_250_000)))
    assert response.status_code == 200
    assert response.json()["data"]["newBalance"] == 12.25
    assert wallet_state(top, payer.address) == (12_250_000, [FIVE_USD, 7_250_000])


@pytest.mark.parametrize(("name", "version"), [("X-PAYMENT", 1), ("X-402-Payment", 2)])
async def test_v1_shaped_payloads_on_the_other_header_names(top: Api, facilitator: LocalFacilitator,
                                                             payer: LocalAccount, name: str, version: int) -> None:
    response = await post(top, v1_header(sign(payer, TEN_USD), version=version), name=name)
    assert response.status_code == 200, response.text
    assert decode(response.headers["PAYMENT-RESPONSE"])["success"] is True
    assert ("X-PAYMENT-RESPONSE" in response.headers) == (name == "X-PAYMENT")
    assert facilitator.problems() == []
    sent = facilitator.calls[0].body
    assert sent["x402Version"] == 1
    assert sent["paymentRequirements"]["network"] == "base"
    assert sent["paymentRequirements"]["maxAmountRequired"] == str(TEN_USD)
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


async def test_amount_bounds_are_inclusive(top: Api, payer: LocalAccount) -> None:
    assert (await post(top, v2_header(sign(payer, FIVE_USD)))).status_code == 200
    assert (await post(top, v2_header(sign(payer, 10_000_000_000)))).status_code == 200
    assert wallet_state(top, payer.address)[0] == 10_005_000_000


# --- credited once ----------------------------------------------------------------------------------------------


async def test_replayed_authorization_credits_nothing(top: Api, facilitator: LocalFacilitator,
                                                      payer: LocalAccount) -> None:
    header = v2_header(sign(payer, TEN_USD))
    first = await post(top, header)
    assert first.status_code == 200
    # The same authorization again, on any header name or protocol shape.
    again = await post(top, header)
    body = assert_error(again, 409, "PAYMENT_ALREADY_PROCESSED")
    assert body["details"]["paymentId"] == first.json()["data"]["paymentId"]
    assert body["details"]["transaction"] == decode(first.headers["PAYMENT-RESPONSE"])["transaction"]
    assert_error(await post(top, header, name="X-402-Payment"), 409, "PAYMENT_ALREADY_PROCESSED")
    assert facilitator.paths() == ["/verify", "/settle"]
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


async def test_replay_through_the_v1_network_alias_is_the_same_payment(top: Api, payer: LocalAccount) -> None:
    inner = sign(payer, TEN_USD)
    assert (await post(top, v2_header(inner))).status_code == 200
    assert_error(await post(top, v1_header(inner), name="X-PAYMENT"), 409, "PAYMENT_ALREADY_PROCESSED")
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


async def test_concurrent_duplicates_credit_once(top: Api, facilitator: LocalFacilitator,
                                                 payer: LocalAccount) -> None:
    facilitator.settle_delay = 0.3
    header = v2_header(sign(payer, TEN_USD))
    responses = await asyncio.gather(*(post(top, header) for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"] == "PAYMENT_IN_PROGRESS"
    assert facilitator.paths() == ["/verify", "/settle"]
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


# --- local checks: nothing reaches the facilitator or the database -----------------------------------------------


async def test_wrong_recipient(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    other = Account.create().address
    assert_error(await post(top, v2_header(sign(payer, TEN_USD, to=other))), 400, "INVALID_PAYMENT_RECIPIENT")
    assert_error(await post(top, v2_header(sign(payer, TEN_USD, to=other), pay_to=other)), 400,
                 "INVALID_PAYMENT_RECIPIENT")
    assert_error(await post(top, v2_header(sign(payer, TEN_USD), pay_to=other)), 400, "INVALID_PAYMENT_RECIPIENT")
    assert_nothing_happened(top, facilitator, payer.address)


async def test_amount_outside_the_limits(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    assert_error(await post(top, v2_header(sign(payer, FIVE_USD - 1))), 400, "AMOUNT_TOO_LOW")
    assert_error(await post(top, v2_header(sign(payer, 0))), 400, "AMOUNT_TOO_LOW")
    assert_error(await post(top, v2_header(sign(payer, 10_000_000_001))), 400, "AMOUNT_TOO_HIGH")
    inner = sign(payer, TEN_USD)
    inner["authorization"]["value"] = "-10000000"
    assert_error(await post(top, v2_header(inner)), 400, "INVALID_AMOUNT")
    assert_nothing_happened(top, facilitator, payer.address)


async def test_wrong_asset_network_or_scheme(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    inner = sign(payer, TEN_USD)
    usdc_ethereum = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
    assert_error(await post(top, v2_header(inner, asset=usdc_ethereum)), 400, "UNSUPPORTED_TOKEN")
    assert_error(await post(top, v2_header(inner, network="eip155:1")), 400, "UNSUPPORTED_NETWORK")
    assert_error(await post(top, v2_header(inner, network=SOLANA)), 400, "UNSUPPORTED_NETWORK")
    assert_error(await post(top, v1_header(inner, network="base-sepolia"), name="X-PAYMENT"), 400,
                 "UNSUPPORTED_NETWORK")
    assert_error(await post(top, v2_header(inner, scheme="upto")), 400, "UNSUPPORTED_SCHEME")
    # An authorization signed for another token or chain does not verify against Base USDC: the v1 shape names
    # no asset, so the EIP-712 domain is where it shows.
    other_token = sign(payer, TEN_USD, asset=usdc_ethereum)
    assert_error(await post(top, v1_header(other_token), name="X-PAYMENT"), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_signature")
    other_chain = sign(payer, TEN_USD, chain_id=1)
    assert_error(await post(top, v2_header(other_chain)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_signature")
    assert_nothing_happened(top, facilitator, payer.address)


async def test_authorization_outside_its_validity_window(top: Api, facilitator: LocalFacilitator,
                                                         payer: LocalAccount) -> None:
    now = int(time.time())
    expired = sign(payer, TEN_USD, valid_after=now - 600, valid_before=now - 1)
    assert_error(await post(top, v2_header(expired)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_authorization_valid_before")
    about_to_expire = sign(payer, TEN_USD, valid_before=now + 2)
    assert_error(await post(top, v2_header(about_to_expire)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_authorization_valid_before")
    early = sign(payer, TEN_USD, valid_after=now + 300, valid_before=now + 900)
    assert_error(await post(top, v2_header(early)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_authorization_valid_after")
    assert_nothing_happened(top, facilitator, payer.address)


async def test_signature_by_another_key(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    forged = sign(payer, TEN_USD, signer=Account.create())
    assert_error(await post(top, v2_header(forged)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_signature")
    # Tampering with a signed field after signing breaks it too.
    tampered = sign(payer, FIVE_USD)
    tampered["authorization"]["value"] = str(TEN_USD)
    assert_error(await post(top, v2_header(tampered)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_signature")
    truncated = sign(payer, TEN_USD)
    truncated["signature"] = truncated["signature"][:-2]
    assert_error(await post(top, v2_header(truncated)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_signature")
    # The malleable twin (s → n - s, v flipped) recovers to the same key, but USDC's ecrecover refuses high s.
    high_s = sign(payer, TEN_USD)
    raw = bytes.fromhex(high_s["signature"][2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    high_s["signature"] = "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([55 - raw[64]])).hex()
    assert_error(await post(top, v2_header(high_s)), 400, "PAYMENT_VERIFICATION_FAILED",
                 "invalid_exact_evm_payload_signature")
    assert_nothing_happened(top, facilitator, payer.address)


@pytest.mark.parametrize("header", [
    "not base64!",
    "eyJ4NDAyVmVyc2lvbiI6Mn0",  # unpadded
    base64.b64encode(b"\xff\xfe not json").decode(),
    b64([1, 2, 3]),
    b64({"x402Version": 3, "scheme": "exact", "network": "base", "payload": {}}),
    b64({"x402Version": "2", "scheme": "exact", "network": "base", "payload": {}}),
    b64({"x402Version": 2, "accepted": {"scheme": "exact"}, "payload": {}}),
    b64({"x402Version": 1, "scheme": "exact", "network": "base", "payload": {"signature": "0x00"}}),
    b64({"x402Version": 1, "scheme": "exact", "network": "base",
         "payload": {"signature": "0x00", "authorization": {"from": "0x1", "to": RECEIVER, "value": "5000000",
                                                            "validAfter": "0", "validBefore": "1"}}}),
])
async def test_malformed_payment_header(top: Api, facilitator: LocalFacilitator, header: str) -> None:
    body = assert_error(await post(top, header), 400, "INVALID_PAYMENT_FORMAT")
    assert "PAYMENT-SIGNATURE" in body["message"]
    assert facilitator.paths() == [] and payment_rows(top) == []


# --- the facilitator says no, is down, or is slow ---------------------------------------------------------------


async def test_verify_rejected_then_retried(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    facilitator.mode = "reject"
    header = v2_header(sign(payer, TEN_USD))
    assert_error(await post(top, header), 400, "PAYMENT_VERIFICATION_FAILED", "insufficient_funds")
    assert [r.status for r in payment_rows(top)] == ["FAILED"]
    assert wallet_state(top, payer.address) == (None, [])
    # A FAILED payment moved no money: the same authorization may be submitted again.
    facilitator.mode = "ok"
    assert (await post(top, header)).status_code == 200
    assert facilitator.paths() == ["/verify", "/verify", "/settle"]
    assert [r.status for r in payment_rows(top)] == ["SETTLED"]
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


async def test_settlement_failure_is_a_402_with_the_settle_response(top: Api, facilitator: LocalFacilitator,
                                                                   payer: LocalAccount) -> None:
    facilitator.mode = "settle_fail"
    header = v2_header(sign(payer, TEN_USD))
    response = await post(top, header)
    assert response.status_code == 402
    assert response.json()["accepts"][0]["network"] == BASE
    assert decode(response.headers["PAYMENT-REQUIRED"])["error"] == "SETTLEMENT_FAILED: insufficient_funds"
    settlement = decode(response.headers["PAYMENT-RESPONSE"])
    assert settlement == {"success": False, "errorReason": "insufficient_funds", "transaction": "",
                          "network": BASE, "payer": payer.address}
    assert wallet_state(top, payer.address) == (None, [])
    facilitator.mode = "ok"
    assert (await post(top, header)).status_code == 200
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


async def test_facilitator_down(top: Api, facilitator: LocalFacilitator, payer: LocalAccount) -> None:
    facilitator.stop()
    header = v2_header(sign(payer, TEN_USD))
    assert_error(await post(top, header), 503, "FACILITATOR_UNAVAILABLE")
    assert [r.status for r in payment_rows(top)] == ["FAILED"]
    assert wallet_state(top, payer.address) == (None, [])
    facilitator.start()  # back on the same port
    assert (await post(top, header)).status_code == 200
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])


async def test_slow_settlement_times_out_and_credits_only_when_it_lands(top: Api, facilitator: LocalFacilitator,
                                                                         payer: LocalAccount) -> None:
    facilitator.mode = "slow"  # /settle answers after 2.5 s; the server waits 1 s
    header = v2_header(sign(payer, TEN_USD))
    started = time.monotonic()
    body = assert_error(await post(top, header), 504, "SETTLEMENT_TIMEOUT")
    assert time.monotonic() - started < 2.4
    # Nothing credited yet, and the payment is held: a resubmission is told it is in progress.
    assert wallet_state(top, payer.address) == (None, [])
    assert [r.status for r in payment_rows(top)] == ["SETTLING"]
    assert_error(await post(top, header), 409, "PAYMENT_IN_PROGRESS")
    assert facilitator.paths() == ["/verify", "/settle"]
    # The transfer lands after all: it is credited then, once.
    await settle_pending()
    assert [r.status for r in payment_rows(top)] == ["SETTLED"]
    assert wallet_state(top, payer.address) == (TEN_USD, [TEN_USD])
    replay = assert_error(await post(top, header), 409, "PAYMENT_ALREADY_PROCESSED")
    assert replay["details"]["paymentId"] == body["details"]["paymentId"]
    assert facilitator.paths() == ["/verify", "/settle"]
    assert facilitator.problems() == []
