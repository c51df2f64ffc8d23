"""x402 top-ups (`POST /x402/top-up`): decode the payment header, check the EIP-3009 authorization locally,
verify and settle it through the facilitator, and credit the wallet's account exactly once.

Flow (X402.md §1, SPEC §7 "Top-up"):

1. No payment header: 402 whose body is `{x402Version: 2, accepts}` (the OpenAPI schema allows nothing else)
   and whose `PAYMENT-REQUIRED` header is the full x402 v2 PaymentRequired object (`resource`, `error`,
   `accepts`). One `accepts[]` entry per rail, priced at the minimum top-up.
2. `PAYMENT-SIGNATURE` (v2), `X-PAYMENT` (v1) or `X-402-Payment` (Venice legacy): strict base64 → JSON →
   pydantic. The payload's shape decides how it is read: `accepted` present → x402 v2 PaymentPayload;
   `scheme`/`network` at the top → the v1 shape (Venice's own example client sends that shape with
   `x402Version: 2`).
3. Local checks, before anything touches the database or the facilitator: scheme `exact`, network (the CAIP-2
   setting or its v1 alias such as `base`), asset = the configured USDC (any letter case), `to` = our receiver,
   value within [min, max] top-up, `validAfter ≤ now` and `validBefore ≥ now + 6 s` (the reference
   facilitator's margin: an authorization about to expire cannot settle), and the EIP-712 signature
   recovers to `from` (65-byte EOA signatures only; low-s, as USDC's ecrecover demands).
4. Claim the payment: one transaction inserts the `x402_payments` row as SETTLING (unique per network, asset
   and EIP-3009 nonce). A row already SETTLING → 409 PAYMENT_IN_PROGRESS; SETTLED → 409
   PAYMENT_ALREADY_PROCESSED (credits nothing; `details` names the paymentId and transaction so a client that
   lost the first answer can tell it was credited); FAILED → taken over, so a failed authorization may be
   submitted again (a FAILED row means the facilitator said no, or was never reached: no money moved).
5. Facilitator `/verify`, then `/settle`. After a successful settle ONE transaction marks the row SETTLED and
   appends the TOP_UP ledger entry to the wallet's account (created if new, lower-cased address).

Settlement runs as its own task. The request waits `x402_settle_timeout_seconds` for it; past that the client
gets 504 SETTLEMENT_TIMEOUT and the task carries on: if the transfer lands, the credit lands with it (so
"check your balance before signing a new payment" is true), and meanwhile resubmissions get 409. If the process
stops first, or the facilitator never answers, the row stays SETTLING with a note in `error`: that payment
needs an operator to reconcile it against the chain (the authorization's nonce is in the row).

Error statuses. The OpenAPI file documents 400/402/429/500 for this route with `{error, message, details?}`
bodies; the codes are Venice's (venice-x402 skill):

- 400 INVALID_PAYMENT_FORMAT (undecodable header), UNSUPPORTED_SCHEME, UNSUPPORTED_NETWORK, UNSUPPORTED_TOKEN,
  INVALID_PAYMENT_RECIPIENT, INVALID_AMOUNT, AMOUNT_TOO_LOW, AMOUNT_TOO_HIGH, INVALID_PAYMENT_PAYER, and
  PAYMENT_VERIFICATION_FAILED for whatever the facilitator's verify would reject (expired or not yet valid
  authorization, bad signature) or did reject; `details.reason` is the x402 error string
  (`invalid_exact_evm_payload_authorization_valid_before`, `invalid_exact_evm_payload_signature`, ...).
- 402 settlement failed (funds not moved, safe to retry): the body is the 402 requirements document (the
  schema allows no error fields there); `PAYMENT-REQUIRED` carries `error: "SETTLEMENT_FAILED: <reason>"` and
  `PAYMENT-RESPONSE` the failed SettleResponse, as x402 v2 prescribes.
- 409 PAYMENT_IN_PROGRESS / PAYMENT_ALREADY_PROCESSED (see 4).
- 502 FACILITATOR_ERROR: the facilitator answered junk, or the connection broke mid-settlement.
- 503 FACILITATOR_UNAVAILABLE (facilitator unreachable or /verify too slow; nothing moved, retry later) and
  X402_NOT_CONFIGURED (no receiver wallet configured).
- 504 SETTLEMENT_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from vidgate.accounts.facilitator import (
    FacilitatorClient,
    FacilitatorError,
    FacilitatorTimeout,
    FacilitatorUnavailable,
    SettleResult,
)
from vidgate.accounts.ledger import append_entry, balance_micros, create_account, find_account
from vidgate.accounts.x402 import SOLANA_MAINNET, payment_accepts
from vidgate.db import Database, x402_payments
from vidgate.errors import PaymentRequired, VidgateError
from vidgate.settings import Settings

log = logging.getLogger("vidgate.x402")

# Request header names, in order of preference (Starlette's header lookup is case-insensitive).
PAYMENT_HEADERS = ("PAYMENT-SIGNATURE", "X-PAYMENT", "X-402-Payment")
MAX_HEADER_CHARS = 16 * 1024

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# The EIP-712 domain of native USDC on Base (FiatTokenV2): name "USD Coin", version "2".
USDC_DOMAIN_NAME = "USD Coin"
USDC_DOMAIN_VERSION = "2"
MAX_TIMEOUT_SECONDS = 300
VALID_BEFORE_MARGIN_SECONDS = 6  # the reference facilitator's margin (X402.md §1.6)
# After the request has given up waiting, a settlement may run this long before it is left for reconciliation.
SETTLE_HARD_TIMEOUT_FLOOR_SECONDS = 120.0
TOP_UP_DESCRIPTION = "Venice x402 top-up"

V1_NETWORK_ALIASES = {
    "eip155:8453": "base",
    "eip155:84532": "base-sepolia",
    "eip155:43114": "avalanche",
    "eip155:43113": "avalanche-fuji",
}

SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"0x[0-9a-fA-F]{64}")
_SIGNATURE = re.compile(r"0x(?:[0-9a-fA-F]{2})+")
_UINT = re.compile(r"[0-9]{1,78}")

SETTLING, SETTLED, FAILED = "SETTLING", "SETTLED", "FAILED"


# --- errors ---------------------------------------------------------------------------------------------------


class TopUpError(VidgateError):
    """A top-up failure: `{"error": "<CODE>", "message": ..., "details"?: {...}}`."""

    def __init__(self, status_code: int, code: str, message: str, *, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status_code = status_code
        self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


def _bad(code: str, message: str, reason: str | None = None) -> TopUpError:
    return TopUpError(400, code, message, details={"reason": reason} if reason else None)


def _verification_failed(message: str, reason: str) -> TopUpError:
    return _bad("PAYMENT_VERIFICATION_FAILED", message, reason)


# --- the payload models (X402.md §1.4) --------------------------------------------------------------------------


class _Model(BaseModel):
    # x402 lets clients add fields (extensions echo, SDK extras): keep them, read only what is defined.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


UintLike = StrictStr | StrictInt  # the spec says strings; some clients send numbers


class Authorization(_Model):
    from_: StrictStr = Field(alias="from")
    to: StrictStr
    value: UintLike
    validAfter: UintLike
    validBefore: UintLike
    nonce: StrictStr


class ExactEvmPayload(_Model):
    signature: StrictStr
    authorization: Authorization


class ResourceInfo(_Model):
    url: StrictStr
    description: StrictStr | None = None
    mimeType: StrictStr | None = None


class PaymentRequirementsV2(_Model):
    scheme: StrictStr
    network: StrictStr
    amount: UintLike
    asset: StrictStr
    payTo: StrictStr
    maxTimeoutSeconds: StrictInt | float
    extra: dict[str, Any] | None = None


class PaymentPayloadV2(_Model):
    """x402 v2: `{x402Version: 2, resource?, accepted: PaymentRequirements, payload, extensions?}`."""

    x402Version: Literal[2]
    resource: ResourceInfo | None = None
    accepted: PaymentRequirementsV2
    payload: dict[str, Any]
    extensions: dict[str, Any] | None = None


class PaymentPayloadV1(_Model):
    """x402 v1: `{x402Version: 1, scheme, network, payload}` (also sent with `x402Version: 2` by the npm
    `x402` package's `createPaymentHeader`, which Venice's docs use)."""

    x402Version: Annotated[int, Field(ge=1, le=2, strict=True)]
    scheme: StrictStr
    network: StrictStr
    payload: dict[str, Any]


@dataclass(frozen=True)
class PaymentHeader:
    name: str
    value: str


@dataclass(frozen=True)
class DecodedPayment:
    header: str
    shape: Literal[1, 2]
    scheme: str
    network: str
    asset: str | None  # v2 `accepted.asset`; the v1 shape names no asset
    pay_to: str | None  # v2 `accepted.payTo`
    payload: dict[str, Any]


def find_payment_header(headers: Any) -> PaymentHeader | None:
    """The first non-empty payment header, by preference: PAYMENT-SIGNATURE, X-PAYMENT, X-402-Payment."""
    for name in PAYMENT_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip():
            return PaymentHeader(name, value.strip())
    return None


def _format_error(header: str, problem: str, reason: str = "invalid_payload") -> TopUpError:
    return _bad("INVALID_PAYMENT_FORMAT", f"Invalid {header} header: {problem}", reason)


def decode_payment_header(header: PaymentHeader) -> DecodedPayment:
    """Strict base64 (standard alphabet, padded) → JSON object → a v1- or v2-shaped PaymentPayload."""
    text = header.value
    if len(text) > MAX_HEADER_CHARS:
        raise _format_error(header.name, f"longer than {MAX_HEADER_CHARS} characters")
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise _format_error(header.name, "not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
        data = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise _format_error(header.name, "the base64 does not hold JSON") from None
    if not isinstance(data, dict):
        raise _format_error(header.name, "the JSON is not an object")
    version = data.get("x402Version")
    if type(version) is not int or version not in (1, 2):
        raise _format_error(header.name, "x402Version must be 1 or 2", "invalid_x402_version")
    try:
        if "accepted" in data:
            v2 = PaymentPayloadV2.model_validate(data)
            return DecodedPayment(header.name, 2, v2.accepted.scheme, v2.accepted.network, v2.accepted.asset,
                                  v2.accepted.payTo, v2.payload)
        v1 = PaymentPayloadV1.model_validate(data)
        return DecodedPayment(header.name, 1, v1.scheme, v1.network, None, None, v1.payload)
    except ValidationError as exc:
        raise _format_error(header.name, _first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return f"{where}: {err['msg']}"


# --- local checks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedPayment:
    """A payment whose authorization passed every local check. Addresses are checksummed, the nonce is
    lower-case hex, the network is the canonical (CAIP-2) setting."""

    shape: Literal[1, 2]
    network: str
    asset: str
    payer: str
    pay_to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: str
    signature: str

    @property
    def payment_id(self) -> str:
        """Derived from the signed payment, so every submission of one authorization has the same id."""
        digest = hashlib.sha256(f"{self.network}|{self.asset.lower()}|{self.nonce}".encode()).hexdigest()
        return "x402-" + digest[:32]

    @property
    def wallet(self) -> str:
        return self.payer.lower()

    def _authorization(self) -> dict[str, Any]:
        return {"from": self.payer, "to": self.pay_to, "value": str(self.value),
                "validAfter": str(self.valid_after), "validBefore": str(self.valid_before), "nonce": self.nonce}

    def facilitator_request(self, resource_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(paymentPayload, paymentRequirements) for /verify and /settle, rebuilt from what was checked: the
        requirements are ours (priced at exactly the authorized value, which the `exact` scheme demands), and
        the payload restates the authorization in that protocol version's shape."""
        extra = {"name": USDC_DOMAIN_NAME, "version": USDC_DOMAIN_VERSION}
        inner = {"signature": self.signature, "authorization": self._authorization()}
        if self.shape == 1:
            network = V1_NETWORK_ALIASES.get(self.network, self.network)
            requirements = {
                "scheme": "exact", "network": network, "maxAmountRequired": str(self.value), "resource": resource_url,
                "description": TOP_UP_DESCRIPTION, "mimeType": "application/json", "payTo": self.pay_to,
                "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS, "asset": self.asset, "extra": extra,
            }
            return {"x402Version": 1, "scheme": "exact", "network": network, "payload": inner}, requirements
        requirements = {
            "scheme": "exact", "network": self.network, "amount": str(self.value), "asset": self.asset,
            "payTo": self.pay_to, "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS, "extra": extra,
        }
        payload = {
            "x402Version": 2,
            "resource": {"url": resource_url, "description": TOP_UP_DESCRIPTION, "mimeType": "application/json"},
            "accepted": requirements, "payload": inner,
        }
        return payload, requirements


def chain_id(network: str) -> int:
    """8453 for `eip155:8453`."""
    namespace, _, reference = network.partition(":")
    if namespace != "eip155" or not reference.isdigit():
        raise ValueError(f"x402_network {network!r} is not an eip155 CAIP-2 id")
    return int(reference)


def _network_matches(sent: str, configured: str) -> bool:
    return sent == configured or sent == V1_NETWORK_ALIASES.get(configured)


def _uint(value: str | int, field: str, code: str = "INVALID_PAYMENT_FORMAT") -> int:
    text = str(value)
    if not _UINT.fullmatch(text) or int(text) >= 2**256:
        raise _bad(code, f"authorization.{field} must be an unsigned integer (a decimal string)", "invalid_payload")
    return int(text)


def transfer_typed_data(*, asset: str, network: str, payer: str, pay_to: str, value: int, valid_after: int,
                        valid_before: int, nonce: str) -> dict[str, Any]:
    """The EIP-712 `TransferWithAuthorization` message of EIP-3009 for USDC on `network` (X402.md §1.6)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": USDC_DOMAIN_NAME, "version": USDC_DOMAIN_VERSION, "chainId": chain_id(network),
                   "verifyingContract": asset},
        "message": {"from": payer, "to": pay_to, "value": value, "validAfter": valid_after,
                    "validBefore": valid_before, "nonce": bytes.fromhex(nonce[2:])},
    }


def recover_signer(typed_data: dict[str, Any], signature: bytes) -> str | None:
    """The checksummed address that signed `typed_data`, or None if the signature is not a valid one."""
    # Imported here: eth-account takes half a second to import and only top-ups and SIWX need it.
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    if len(signature) != 65 or int.from_bytes(signature[32:64], "big") > SECP256K1_HALF_N:
        return None
    try:
        return Account.recover_message(encode_typed_data(full_message=typed_data), signature=signature)
    except Exception:  # eth-keys raises several types for a malformed r/s/v
        return None


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


def check_payment(decoded: DecodedPayment, settings: Settings, now: float | None = None) -> CheckedPayment:
    """Every check that needs neither the database nor the facilitator. Raises TopUpError (400)."""
    now = time.time() if now is None else now
    if decoded.scheme != "exact":
        raise _bad("UNSUPPORTED_SCHEME", f"Unsupported payment scheme {decoded.scheme!r}: only 'exact' is accepted",
                   "unsupported_scheme")
    network = settings.x402_network
    if not _network_matches(decoded.network, network):
        if decoded.network in ("solana", SOLANA_MAINNET):
            message = "Solana top-ups are not supported by this server: pay on " + network
        else:
            message = f"Unsupported payment network {decoded.network!r}: pay on {network}"
        raise _bad("UNSUPPORTED_NETWORK", message, "invalid_network")
    asset = settings.x402_usdc_base
    if decoded.asset is not None and decoded.asset.lower() != asset.lower():
        raise _bad("UNSUPPORTED_TOKEN", f"Unsupported token {decoded.asset!r}: only USDC ({asset}) is accepted",
                   "invalid_payment_requirements")
    try:
        inner = ExactEvmPayload.model_validate(decoded.payload)
    except ValidationError as exc:
        raise _format_error(decoded.header, "payload: " + _first_error(exc)) from None
    auth = inner.authorization

    receiver = settings.x402_pay_to
    for label, to in (("authorization.to", auth.to), ("accepted.payTo", decoded.pay_to)):
        if to is not None and to.lower() != receiver.lower():
            raise _bad("INVALID_PAYMENT_RECIPIENT", f"{label} {to!r} is not this server's receiver {receiver}",
                       "invalid_exact_evm_payload_recipient_mismatch")

    value = _uint(auth.value, "value", "INVALID_AMOUNT")
    minimum, maximum = _usd_to_units(settings.x402_min_top_up_usd), _usd_to_units(settings.x402_max_top_up_usd)
    if value < minimum:
        raise _bad("AMOUNT_TOO_LOW", f"Top-up amount {_units_text(value)} USDC is below the minimum of "
                   f"{_units_text(minimum)} USDC", "amount_too_low")
    if value > maximum:
        raise _bad("AMOUNT_TOO_HIGH", f"Top-up amount {_units_text(value)} USDC is above the maximum of "
                   f"{_units_text(maximum)} USDC", "amount_too_high")

    if not _ADDRESS.fullmatch(auth.from_):
        raise _bad("INVALID_PAYMENT_PAYER", f"authorization.from {auth.from_!r} is not an EVM address",
                   "invalid_payload")
    if not _NONCE.fullmatch(auth.nonce):
        raise _format_error(decoded.header, "authorization.nonce must be 32 bytes of 0x-prefixed hex")
    valid_after = _uint(auth.validAfter, "validAfter")
    valid_before = _uint(auth.validBefore, "validBefore")
    if valid_before < now + VALID_BEFORE_MARGIN_SECONDS:
        raise _verification_failed("The payment authorization has expired (validBefore is past, or too close to "
                                   "settle); sign a new one", "invalid_exact_evm_payload_authorization_valid_before")
    if valid_after > now:
        raise _verification_failed("The payment authorization is not valid yet (validAfter is in the future)",
                                   "invalid_exact_evm_payload_authorization_valid_after")

    if not _SIGNATURE.fullmatch(inner.signature):
        raise _verification_failed("payload.signature is not 0x-prefixed hex", "invalid_exact_evm_payload_signature")
    signature = bytes.fromhex(inner.signature[2:])
    payer, pay_to, nonce = _checksum(auth.from_), _checksum(receiver), auth.nonce.lower()
    typed = transfer_typed_data(asset=asset, network=network, payer=payer, pay_to=pay_to, value=value,
                                valid_after=valid_after, valid_before=valid_before, nonce=nonce)
    signer = recover_signer(typed, signature)
    if signer is None or signer.lower() != payer.lower():
        detail = "" if len(signature) == 65 else " (only 65-byte EOA signatures are supported)"
        raise _verification_failed("The payment signature does not match authorization.from" + detail,
                                   "invalid_exact_evm_payload_signature")
    return CheckedPayment(shape=decoded.shape, network=network, asset=_checksum(asset), payer=payer, pay_to=pay_to,
                          value=value, valid_after=valid_after, valid_before=valid_before, nonce=nonce,
                          signature="0x" + signature.hex())


def _usd_to_units(usd: float) -> int:
    return round(usd * 1_000_000)


def _units_text(units: int) -> str:
    whole, frac = divmod(units, 1_000_000)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".")


# --- 402 requirements -------------------------------------------------------------------------------------------


def _b64json(value: dict[str, Any]) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


def top_up_accepts(settings: Settings) -> list[dict[str, Any]]:
    """One entry per rail at the minimum top-up; the top-up route names Solana in CAIP-2 form (venice-x402)."""
    accepts = payment_accepts(settings, settings.x402_min_top_up_usd)
    for entry in accepts:
        if entry["network"] == "solana":
            entry["network"] = SOLANA_MAINNET
    return accepts


def top_up_requirements(settings: Settings, resource_url: str,
                        error: str = "PAYMENT-SIGNATURE header is required") -> tuple[dict[str, Any], dict[str, str]]:
    """The 402 body (`{x402Version, accepts}`, all the OpenAPI schema allows) and its `PAYMENT-REQUIRED` header:
    the x402 v2 PaymentRequired object with the same accepts plus `resource` and `error`."""
    accepts = top_up_accepts(settings)
    body = {"x402Version": 2, "accepts": accepts}
    protocol = {
        "x402Version": 2, "error": error,
        "resource": {"url": resource_url, "description": TOP_UP_DESCRIPTION, "mimeType": "application/json"},
        "accepts": accepts,
    }
    return body, {"PAYMENT-REQUIRED": _b64json(protocol)}


# --- the database side ------------------------------------------------------------------------------------------


def _claim(conn: Connection, payment: CheckedPayment) -> None:
    """Mark the payment SETTLING, or raise 409 if it is settling or settled already (one transaction)."""
    key = (x402_payments.c.network == payment.network) & (x402_payments.c.asset == payment.asset.lower()) & (
        x402_payments.c.authorization_nonce == payment.nonce)
    row = conn.execute(select(x402_payments).where(key)).first()
    now = time.time()
    if row is None:
        conn.execute(insert(x402_payments).values(
            id=payment.payment_id, wallet=payment.wallet, network=payment.network, asset=payment.asset.lower(),
            authorization_nonce=payment.nonce, amount_micros=payment.value, status=SETTLING, transaction=None,
            error=None, created_at=now, updated_at=now,
        ))
        return
    if row.status == FAILED:
        # A failed attempt moved no money: the same authorization may be tried again.
        taken = conn.execute(
            update(x402_payments).where((x402_payments.c.id == row.id) & (x402_payments.c.status == FAILED))
            .values(status=SETTLING, wallet=payment.wallet, amount_micros=payment.value, error=None, updated_at=now)
        ).rowcount
        if taken == 1:
            return
    if row.status == SETTLED:
        raise TopUpError(409, "PAYMENT_ALREADY_PROCESSED",
                         "This payment has already been settled and credited; it is not credited again",
                         details={"paymentId": row.id, "transaction": row.transaction})
    raise TopUpError(409, "PAYMENT_IN_PROGRESS", "This payment is being settled; retry shortly and check the balance",
                     details={"paymentId": row.id})


async def claim_payment(db: Database, payment: CheckedPayment) -> None:
    try:
        await db.write(lambda conn: _claim(conn, payment))
    except IntegrityError:
        # Another database writer inserted the same nonce between our read and insert: answer as for it.
        await db.write(lambda conn: _claim(conn, payment))


def _mark(conn: Connection, payment_id: str, status: str, error: str | None) -> None:
    conn.execute(update(x402_payments).where((x402_payments.c.id == payment_id) & (x402_payments.c.status == SETTLING))
                 .values(status=status, error=error, updated_at=time.time()))


@dataclass(frozen=True)
class Credited:
    wallet: str
    amount_micros: int
    balance_micros: int
    payment_id: str
    transaction: str


def _record_settlement(conn: Connection, payment: CheckedPayment, transaction: str) -> Credited:
    """SETTLING → SETTLED and the TOP_UP ledger entry, in one transaction: credited exactly once."""
    moved = conn.execute(
        update(x402_payments)
        .where((x402_payments.c.id == payment.payment_id) & (x402_payments.c.status == SETTLING))
        .values(status=SETTLED, transaction=transaction or None, error=None, updated_at=time.time())
    ).rowcount
    if moved != 1:
        raise RuntimeError(f"x402 payment {payment.payment_id} was not SETTLING when its settlement was recorded")
    account_id = find_account(conn, payment.wallet) or create_account(conn, "x402 wallet", payment.wallet)
    append_entry(conn, account_id, payment.value, "TOP_UP", note=f"x402 {payment.payment_id} tx {transaction}")
    return Credited(payment.wallet, payment.value, balance_micros(conn, account_id) or 0, payment.payment_id,
                    transaction)


# --- settlement -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettleOutcome:
    credited: Credited | None = None
    result: SettleResult | None = None  # the facilitator's answer (a failure when `credited` is None)
    error: TopUpError | None = None


_settlements: set[asyncio.Task[SettleOutcome]] = set()


def pending_settlements() -> set[asyncio.Task[SettleOutcome]]:
    """Settlements still running after their request gave up waiting (for a graceful shutdown to await)."""
    return set(_settlements)


async def _settle(db: Database, facilitator: FacilitatorClient, payment: CheckedPayment,
                  request: tuple[dict[str, Any], dict[str, Any]]) -> SettleOutcome:
    """Settle and record the outcome. Runs to the end even when the request stopped waiting."""
    pid = payment.payment_id
    try:
        result = await facilitator.settle(*request)
    except FacilitatorUnavailable as exc:
        problem = str(exc)
        await db.write(lambda conn: _mark(conn, pid, FAILED, problem))
        return SettleOutcome(error=_unavailable(problem))
    except FacilitatorTimeout as exc:
        note = f"settlement outcome unknown (reconcile on-chain): {exc}"
        log.error("x402 payment %s: %s", pid, note)
        await db.write(lambda conn: _note(conn, pid, note))
        return SettleOutcome(error=TopUpError(504, "SETTLEMENT_TIMEOUT", _TIMEOUT_MESSAGE))
    except FacilitatorError as exc:
        problem = str(exc)
        if exc.answered:
            await db.write(lambda conn: _mark(conn, pid, FAILED, problem))
            return SettleOutcome(error=TopUpError(502, "FACILITATOR_ERROR", f"Settlement failed: {problem}"))
        note = f"settlement outcome unknown (reconcile on-chain): {exc}"
        log.error("x402 payment %s: %s", pid, note)
        await db.write(lambda conn: _note(conn, pid, note))
        return SettleOutcome(error=TopUpError(
            502, "FACILITATOR_ERROR", "The facilitator connection broke during settlement; the transfer may still "
            "land. Check the balance before signing a new payment", details={"paymentId": pid}))
    if not result.success:
        reason = result.error_reason or "settlement_failed"
        await db.write(lambda conn: _mark(conn, pid, FAILED, f"settle failed: {reason}"))
        return SettleOutcome(result=result)
    credited = await db.write(lambda conn: _record_settlement(conn, payment, result.transaction))
    log.info("x402 top-up %s: %s credited %s micro-USD (tx %s)", pid, payment.wallet, payment.value,
             result.transaction)
    return SettleOutcome(credited=credited, result=result)


def _note(conn: Connection, payment_id: str, note: str) -> None:
    conn.execute(update(x402_payments).where(x402_payments.c.id == payment_id)
                 .values(error=note, updated_at=time.time()))


_TIMEOUT_MESSAGE = ("Settlement did not finish in time. The transfer may still settle and will then be credited; "
                    "check the balance before signing a new payment")


def _unavailable(detail: str) -> TopUpError:
    log.warning("x402 facilitator unavailable: %s", detail)
    return TopUpError(503, "FACILITATOR_UNAVAILABLE",
                      "The payment facilitator is unavailable; nothing was charged. Try again later")


def facilitator_for(settings: Settings) -> FacilitatorClient:
    timeout = settings.x402_settle_timeout_seconds
    return FacilitatorClient(settings.x402_facilitator_url, verify_timeout=timeout,
                             settle_timeout=max(SETTLE_HARD_TIMEOUT_FLOOR_SECONDS, 4 * timeout))


# --- the whole top-up -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopUpResult:
    body: dict[str, Any]
    headers: dict[str, str]


async def top_up(settings: Settings, db: Database, header: PaymentHeader, resource_url: str,
                 facilitator: FacilitatorClient | None = None) -> TopUpResult:
    """Check, verify, settle and credit one payment. Raises TopUpError, or PaymentRequired when the
    settlement itself failed."""
    if settings.x402_pay_to.lower() == ZERO_ADDRESS:
        raise TopUpError(503, "X402_NOT_CONFIGURED", "x402 payments are not configured on this server "
                         "(no receiver wallet)")
    payment = check_payment(decode_payment_header(header), settings)
    facilitator = facilitator or facilitator_for(settings)
    request = payment.facilitator_request(resource_url)
    await claim_payment(db, payment)
    pid = payment.payment_id

    try:
        verdict = await facilitator.verify(*request)
    except (FacilitatorUnavailable, FacilitatorTimeout) as exc:
        problem = str(exc)
        await db.write(lambda conn: _mark(conn, pid, FAILED, problem))
        raise _unavailable(problem) from None
    except FacilitatorError as exc:
        problem = str(exc)
        await db.write(lambda conn: _mark(conn, pid, FAILED, problem))
        raise TopUpError(502, "FACILITATOR_ERROR", f"Payment verification failed: {problem}") from None
    except BaseException:
        await db.write(lambda conn: _mark(conn, pid, FAILED, "verify interrupted"))
        raise
    if not verdict.is_valid:
        reason = verdict.invalid_reason or "verification_failed"
        await db.write(lambda conn: _mark(conn, pid, FAILED, f"verify rejected: {reason}"))
        raise _verification_failed(f"The facilitator rejected the payment: {reason}", reason)

    task = asyncio.ensure_future(_settle(db, facilitator, payment, request))
    _settlements.add(task)
    task.add_done_callback(_settlement_done)
    try:
        outcome = await asyncio.wait_for(asyncio.shield(task), settings.x402_settle_timeout_seconds)
    except TimeoutError:
        raise TopUpError(504, "SETTLEMENT_TIMEOUT", _TIMEOUT_MESSAGE, details={"paymentId": pid}) from None

    if outcome.error is not None:
        raise outcome.error
    settle_response = {"network": payment.network, "payer": payment.payer}
    if outcome.credited is None:
        assert outcome.result is not None
        reason = outcome.result.error_reason or "settlement_failed"
        body, headers = top_up_requirements(settings, resource_url, f"SETTLEMENT_FAILED: {reason}")
        headers.update(_response_headers(header, {"success": False, "errorReason": reason, "transaction": "",
                                                  **settle_response}))
        raise PaymentRequired(body, headers=headers)
    credited = outcome.credited
    return TopUpResult(
        body={"success": True, "data": {
            "walletAddress": credited.wallet,
            "amountCredited": credited.amount_micros / 1_000_000,
            "newBalance": credited.balance_micros / 1_000_000,
            "paymentId": credited.payment_id,
        }},
        headers=_response_headers(header, {"success": True, "transaction": credited.transaction, **settle_response}),
    )


def _response_headers(header: PaymentHeader, settle_response: dict[str, Any]) -> dict[str, str]:
    """`PAYMENT-RESPONSE` always; `X-PAYMENT-RESPONSE` too for a v1 (`X-PAYMENT`) client."""
    encoded = _b64json(settle_response)
    headers = {"PAYMENT-RESPONSE": encoded}
    if header.name == "X-PAYMENT":
        headers["X-PAYMENT-RESPONSE"] = encoded
    return headers


def _settlement_done(task: asyncio.Task[SettleOutcome]) -> None:
    _settlements.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("x402 settlement task failed", exc_info=task.exception())
