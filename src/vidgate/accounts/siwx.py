"""Sign-In-With-X: read and verify a `SIGN-IN-WITH-X` header (X402.md §2; SPEC §7). No database here.

The header is base64 (standard alphabet, strict) of a JSON object in one of two forms:

- Form A: `{"address", "message", "signature", "chainId"?, "type"?, "timestamp"?}`, where `message` is the
  signed text (EIP-4361 for EVM wallets, the x402 SIWS layout for Solana). Every rule is checked against the
  *parsed message*; the JSON side fields must agree with it.
- Form B: the structured x402 fields (`domain, address, uri, version, nonce, issuedAt, chainId, ...`), from
  which the exact message bytes are rebuilt before the signature is checked.

Every failure raises `SiwxError` with one of Venice's `X402_SIGN_IN_*` codes. Choices where Venice's docs are
silent, made here on purpose:

- `INVALID_WALLET`: the header's `address` is not a well-formed wallet address for its scheme (EVM `0x` + 40 hex;
  Solana a base58 32-byte key). A signature that does not recover to the address is `INVALID_SIGNATURE`, unless
  `eip1271_rpc_url` is set, in which case the address is asked as an EIP-1271 smart wallet first (on that RPC,
  which must serve Base) and only a "no" or an RPC failure is `INVALID_SIGNATURE`. Without an RPC we cannot tell
  a smart wallet from a wrong key, and "the signature does not match" is the honest answer for both.
- A stale `issuedAt` (older than 5 minutes) is `EXPIRED`, like a passed `expirationTime`.
- A message lacking its `Nonce` or `Issued At` line is `INVALID_MESSAGE` (Venice's docs say so); an empty nonce,
  or Form B without one, is `MISSING_NONCE`. Nonces must be 8+ letters/digits (the EIP-4361 ABNF).
- `notBefore` and `expirationTime` get no clock-skew allowance; `issuedAt` may be up to 30 s in the future.
- The message's `URI` must be on an origin this server answers for (scheme, host and port; the path is free),
  as the x402 SIWX validators and siwe's strict mode require: this server's own origin (`public_base_url`, else
  the request's), or the `https` origin of a domain in `siwx_allowed_domains`. The latter because the domain
  allow-list already accepts messages bound to `api.venice.ai`, and Venice documents `uri: https://api.venice.ai`
  for its clients (OAS `siwx` scheme); refusing that URI would refuse Venice's own client recipe. Venice itself
  does not check the URI (X402.md §2.6). Venice's code list has no URI code, so a foreign origin is
  `DOMAIN_MISMATCH`: the message is bound to another server, which is what that code says for `domain`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import base58
import httpx
import nacl.exceptions
import nacl.signing
from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct

from vidgate.settings import Settings

SOLANA_MAINNET_REF = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
SOLANA_MAINNET = f"solana:{SOLANA_MAINNET_REF}"
MAX_AGE_SECONDS = 300.0
MAX_FUTURE_SKEW_SECONDS = 30.0
LEGACY_TIMESTAMP_TOLERANCE_SECONDS = 30.0
MAX_HEADER_CHARS = 16_384
# The selector of isValidSignature(bytes32,bytes), which is also the value a wallet returns to say "valid".
EIP1271_MAGIC = bytes.fromhex("1626ba7e")

EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
NONCE = re.compile(r"[A-Za-z0-9]{8,128}")
HEADER_LINE = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*)://)?(?P<domain>\S+) wants you to sign in with your "
    r"(?P<kind>Ethereum|Solana) account:"
)
# The tagged lines after the statement, in EIP-4361 order.
TAGS = ("URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time", "Not Before", "Request ID")

GENERIC_FAILURE = "Sign-in-with-X authentication failed"


class SiwxError(Exception):
    """A rejected sign-in: `code` is the full `X402_SIGN_IN_*` code, `message` the text for the `error` field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code if code.startswith("X402_SIGN_IN_") else f"X402_SIGN_IN_{code}"
        self.message = message


@dataclass(frozen=True)
class SiwxIdentity:
    """Who signed in: `address` lower-case for EVM (exact base58 for Solana), `chain_id` in CAIP-2 form."""

    address: str
    chain_id: str
    nonce: str
    scheme: str  # "eip191" | "eip1271" | "ed25519"


@dataclass(frozen=True)
class SiwxMessage:
    """The fields of a parsed (or rebuilt) sign-in message; times are the verbatim strings."""

    kind: str  # "Ethereum" | "Solana"
    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: str | None
    nonce: str | None
    issued_at: str
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SiwxProof:
    """A header whose fields all check out; only the signature is left to verify."""

    text: str
    message: SiwxMessage
    address: str  # as sent (checksummed EVM or base58)
    signature: str
    solana: bool
    chain_id: str  # CAIP-2

    def identity(self, scheme: str) -> SiwxIdentity:
        address = self.address if self.solana else self.address.lower()
        return SiwxIdentity(address=address, chain_id=self.chain_id, nonce=self.message.nonce or "", scheme=scheme)


def normalize_wallet(address: str) -> str:
    """The form wallets are stored and compared in: EVM lower-case, Solana base58 as is (it is case-sensitive)."""
    return address.lower() if address[:2].lower() == "0x" else address


# --- decoding ------------------------------------------------------------------------------------------------


def decode_header(value: str) -> dict[str, Any]:
    """Strict base64 (standard alphabet, padded) of a JSON object."""
    value = value.strip()
    if len(value) > MAX_HEADER_CHARS:
        raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X header is too large")
    try:
        payload = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SiwxError("PARSE_ERROR", "SIGN-IN-WITH-X header must be base64-encoded JSON") from None
    if not isinstance(payload, dict):
        raise SiwxError("PARSE_ERROR", "SIGN-IN-WITH-X header must be base64-encoded JSON object")
    return payload


# --- the message text ----------------------------------------------------------------------------------------


def parse_message(text: str) -> SiwxMessage:
    """Parse an EIP-4361 (or x402 SIWS) message. Raises INVALID_MESSAGE / MISSING_NONCE."""
    lines = text.split("\n")
    head = HEADER_LINE.fullmatch(lines[0]) if lines else None
    if head is None or len(lines) < 4:
        raise SiwxError("INVALID_MESSAGE", "Sign-in message is not an EIP-4361 message")
    address = lines[1]
    if lines[2] != "":
        raise SiwxError("INVALID_MESSAGE", "Sign-in message: expected a blank line after the address")
    i = 3
    statement = None
    if lines[i] == "":  # EIP-4361 without a statement: two blank lines
        i += 1
    elif not lines[i].startswith("URI: "):  # a statement, then a blank line (SIWS has one blank line if none)
        statement = lines[i]
        if i + 1 >= len(lines) or lines[i + 1] != "":
            raise SiwxError("INVALID_MESSAGE", "Sign-in message: expected a blank line after the statement")
        i += 2
    fields: dict[str, str] = {}
    resources: list[str] | None = None
    order = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line == "Resources:":
            if resources is not None:
                raise SiwxError("INVALID_MESSAGE", "Sign-in message: Resources given twice")
            resources = []
            while i < len(lines) and lines[i].startswith("- "):
                resources.append(lines[i][2:])
                i += 1
            order = len(TAGS)
            continue
        tag, sep, value = line.partition(": ")
        if not sep or tag not in TAGS or resources is not None:
            raise SiwxError("INVALID_MESSAGE", f"Sign-in message: unexpected line {line[:60]!r}")
        position = TAGS.index(tag)
        if position < order or tag in fields:
            raise SiwxError("INVALID_MESSAGE", f"Sign-in message: {tag} is out of order or repeated")
        order = position
        fields[tag] = value
    for required in ("URI", "Version", "Nonce", "Issued At"):
        if required not in fields:
            raise SiwxError("INVALID_MESSAGE", f"Sign-in message has no {required} line")
    return SiwxMessage(
        kind=head["kind"], domain=head["domain"], address=address, statement=statement, uri=fields["URI"],
        version=fields["Version"], chain_id=fields.get("Chain ID"), nonce=fields["Nonce"],
        issued_at=fields["Issued At"], expiration_time=fields.get("Expiration Time"),
        not_before=fields.get("Not Before"), request_id=fields.get("Request ID"),
        resources=tuple(resources) if resources is not None else None,
    )


def render_message(m: SiwxMessage) -> str:
    """The exact text a wallet signs: EIP-4361 for Ethereum (two blank lines when there is no statement), the
    x402 reference SIWS layout for Solana (one blank line). Times are copied verbatim."""
    if m.kind == "Ethereum":
        text = f"{m.domain} wants you to sign in with your Ethereum account:\n{m.address}\n\n"
        text += f"{m.statement}\n\n" if m.statement else "\n"
    else:
        text = f"{m.domain} wants you to sign in with your Solana account:\n{m.address}\n\n"
        text += f"{m.statement}\n\n" if m.statement else ""
    lines = [f"URI: {m.uri}", f"Version: {m.version}"]
    if m.chain_id is not None:
        lines.append(f"Chain ID: {m.chain_id}")
    lines += [f"Nonce: {m.nonce}", f"Issued At: {m.issued_at}"]
    if m.expiration_time:
        lines.append(f"Expiration Time: {m.expiration_time}")
    if m.not_before:
        lines.append(f"Not Before: {m.not_before}")
    if m.request_id is not None:
        lines.append(f"Request ID: {m.request_id}")
    if m.resources is not None:
        lines.append("Resources:")
        lines += [f"- {r}" for r in m.resources]
    return text + "\n".join(lines)


def message_from_fields(payload: Mapping[str, Any], solana: bool) -> SiwxMessage:
    """Form B: the structured fields as a message (the Chain ID line carries the bare reference)."""
    for name in ("domain", "address", "uri", "issuedAt"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise SiwxError("INVALID_PAYLOAD", f"SIGN-IN-WITH-X payload needs {name} (or a signed message)")
    if payload.get("chainId") is None:
        raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X payload needs chainId (or a signed message)")
    nonce = payload.get("nonce")
    if nonce is None or nonce == "":
        raise SiwxError("MISSING_NONCE", "SIGN-IN-WITH-X payload has no nonce")
    for name in ("domain", "address", "uri", "issuedAt", "nonce", "statement", "version", "expirationTime",
                 "notBefore", "requestId"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, str) or "\n" in value):
            raise SiwxError("INVALID_PAYLOAD", f"SIGN-IN-WITH-X payload field {name} must be a one-line string")
    resources = payload.get("resources")
    if resources is not None and (
        not isinstance(resources, list) or not all(isinstance(r, str) and "\n" not in r for r in resources)
    ):
        raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X payload field resources must be a list of strings")
    if solana:
        chain = payload["chainId"]
        if not isinstance(chain, str) or not chain:
            raise SiwxError("INVALID_CHAIN_ID", GENERIC_FAILURE)
        chain_ref = chain.removeprefix("solana:")
    else:
        chain_ref = str(evm_chain(payload["chainId"]))
    return SiwxMessage(
        kind="Solana" if solana else "Ethereum", domain=payload["domain"], address=payload["address"],
        statement=payload.get("statement"), uri=payload["uri"], version=payload.get("version") or "1",
        chain_id=chain_ref, nonce=nonce, issued_at=payload["issuedAt"],
        expiration_time=payload.get("expirationTime"), not_before=payload.get("notBefore"),
        request_id=payload.get("requestId"), resources=tuple(resources) if resources is not None else None,
    )


# --- field checks --------------------------------------------------------------------------------------------


def domain_host(value: str) -> str:
    """`https://api.venice.ai:443/x` -> `api.venice.ai`: protocol, user info, port and path stripped."""
    rest = value.strip().split("://", 1)[-1]
    try:
        host = urlsplit("//" + rest).hostname
    except ValueError:
        host = None
    return (host or "").rstrip(".").lower()


DEFAULT_PORTS = {"http": 80, "https": 443}


def uri_origin(value: str) -> tuple[str, str, int] | None:
    """`https://API.example.com/x` -> `("https", "api.example.com", 443)`; None unless an absolute http(s) URI
    with a host. User info is not part of an origin (`https://a.com@evil.example` is evil.example)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a bad port or a malformed IPv6 literal
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def accepted_origins(settings: Settings, server_origin: str | None) -> set[tuple[str, str, int]]:
    """The origins a message's URI may name: the server's own (a URL; only its origin counts) and the https
    origin of each allowed SIWX domain."""
    candidates = [d if "://" in d else f"https://{d.strip()}" for d in settings.siwx_allowed_domains]
    if server_origin:
        candidates.append(server_origin)
    return {origin for origin in map(uri_origin, candidates) if origin is not None}


def check_uri(message: SiwxMessage, settings: Settings, server_origin: str | None) -> None:
    if uri_origin(message.uri) not in accepted_origins(settings, server_origin):
        raise SiwxError("DOMAIN_MISMATCH", f"Sign-in URI {message.uri!r} is not on this server's origin")


def parse_time(value: str | None, label: str) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SiwxError("INVALID_MESSAGE", f"Sign-in message: {label} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise SiwxError("INVALID_MESSAGE", f"Sign-in message: {label} has no time zone")
    return moment.timestamp()


def evm_chain(value: Any) -> int:
    """`8453`, `"8453"` or `"eip155:8453"` -> 8453; any other spelling is INVALID_CHAIN_ID."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        digits = value[len("eip155:"):] if value.startswith("eip155:") else value
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(digits)
    raise SiwxError("INVALID_CHAIN_ID", GENERIC_FAILURE)


def check_chain(payload: Mapping[str, Any], message: SiwxMessage, solana: bool, settings: Settings) -> str:
    """The message's chain must be one we serve; the header's `chainId`, if sent, must name the same one."""
    if solana:
        ref = message.chain_id
        if ref is None:
            raise SiwxError("INVALID_MESSAGE", "Sign-in message has no Chain ID line")
        ref = ref.removeprefix("solana:")
        if ref != SOLANA_MAINNET_REF:
            raise SiwxError("UNSUPPORTED_CHAIN", f"Unsupported chain solana:{ref}; sign in on {SOLANA_MAINNET}")
        sent = payload.get("chainId")
        if sent is not None:
            if not isinstance(sent, str) or not sent:
                raise SiwxError("INVALID_CHAIN_ID", GENERIC_FAILURE)
            if sent.removeprefix("solana:") != ref:
                raise SiwxError("CHAIN_MISMATCH", "chainId does not match the signed message's Chain ID")
        return SOLANA_MAINNET
    # No Chain ID line reads as Ethereum mainnet (chain 1), which is not served.
    if message.chain_id is None:
        chain = 1
    elif message.chain_id.isascii() and message.chain_id.isdigit() and len(message.chain_id) <= 18:
        chain = int(message.chain_id)
    else:
        raise SiwxError("INVALID_MESSAGE", "Sign-in message: Chain ID must be a number")
    sent = payload.get("chainId")
    sent_chain = evm_chain(sent) if sent is not None else None
    if chain != settings.siwx_chain_id:
        raise SiwxError("UNSUPPORTED_CHAIN", f"Unsupported chain {chain}; sign in on chain {settings.siwx_chain_id}")
    if sent_chain is not None and sent_chain != chain:
        raise SiwxError("CHAIN_MISMATCH", "chainId does not match the signed message's Chain ID")
    return f"eip155:{chain}"


def check_times(payload: Mapping[str, Any], message: SiwxMessage, now: float) -> None:
    issued = parse_time(message.issued_at, "Issued At") or 0.0
    if now - issued > MAX_AGE_SECONDS:
        raise SiwxError("EXPIRED", "Sign-in message is too old: Issued At must be within the last 5 minutes")
    if issued - now > MAX_FUTURE_SKEW_SECONDS:
        raise SiwxError("FUTURE_TIMESTAMP", "Sign-in message Issued At is in the future")
    expires = parse_time(message.expiration_time, "Expiration Time")
    if expires is not None and expires <= now:
        raise SiwxError("EXPIRED", "Sign-in message has expired")
    not_before = parse_time(message.not_before, "Not Before")
    if not_before is not None and not_before > now:
        raise SiwxError("NOT_BEFORE", "Sign-in message is not valid yet (Not Before)")
    legacy = payload.get("timestamp")
    if legacy is not None:
        if isinstance(legacy, str) and legacy.isascii() and legacy.isdigit():
            legacy = int(legacy)
        if isinstance(legacy, bool) or not isinstance(legacy, int | float):
            raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X timestamp must be Unix milliseconds")
        if abs(legacy / 1000 - issued) > LEGACY_TIMESTAMP_TOLERANCE_SECONDS:
            raise SiwxError("TIMESTAMP_MISMATCH", "timestamp is not within 30 seconds of the message's Issued At")


def is_solana_address(address: str) -> bool:
    try:
        return 32 <= len(address) <= 44 and len(base58.b58decode(address)) == 32
    except ValueError:
        return False


def read_siwx_header(
    value: str, settings: Settings, now: float | None = None, *, server_origin: str | None = None
) -> SiwxProof:
    """Decode the header and check everything but the signature. Cheap checks first: the signature is the
    expensive part. `server_origin` is the server's public base URL (the API passes the one it answers on);
    without it only the allowed domains' origins are accepted as the message's URI."""
    now = time.time() if now is None else now
    payload = decode_header(value)
    address, signature = payload.get("address"), payload.get("signature")
    if not isinstance(address, str) or not address or not isinstance(signature, str) or not signature:
        raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X payload needs address and signature")
    sent_type = payload.get("type")
    if sent_type is not None and sent_type not in ("eip191", "eip1271", "ed25519"):
        raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X type must be eip191 or ed25519")
    text = payload.get("message")
    if text is not None:
        if not isinstance(text, str) or not text:
            raise SiwxError("INVALID_PAYLOAD", "SIGN-IN-WITH-X message must be a string")
        message = parse_message(text)
        solana = message.kind == "Solana"
        if sent_type is not None and (sent_type == "ed25519") != solana:
            raise SiwxError("INVALID_PAYLOAD", f"SIGN-IN-WITH-X type {sent_type!r} does not fit the message")
    else:
        chain_hint = payload.get("chainId")
        solana = sent_type == "ed25519" or (isinstance(chain_hint, str) and chain_hint.startswith("solana:"))
        message = message_from_fields(payload, solana)
        text = render_message(message)

    if solana:
        if not is_solana_address(address):
            raise SiwxError("INVALID_WALLET", GENERIC_FAILURE)
        if message.address != address:
            raise SiwxError("ADDRESS_MISMATCH", "address does not match the signed message")
    else:
        if not EVM_ADDRESS.fullmatch(address):
            raise SiwxError("INVALID_WALLET", GENERIC_FAILURE)
        if not EVM_ADDRESS.fullmatch(message.address):
            raise SiwxError("INVALID_MESSAGE", "Sign-in message: the address line is not an EVM address")
        if message.address.lower() != address.lower():
            raise SiwxError("ADDRESS_MISMATCH", "address does not match the signed message")

    allowed = {domain_host(d) for d in settings.siwx_allowed_domains}
    if domain_host(message.domain) not in allowed:
        raise SiwxError("DOMAIN_MISMATCH", f"Sign-in domain {message.domain!r} is not accepted by this server")
    check_uri(message, settings, server_origin)
    if message.version != "1":
        raise SiwxError("INVALID_MESSAGE", "Sign-in message Version must be 1")
    chain_id = check_chain(payload, message, solana, settings)
    if not message.nonce:
        raise SiwxError("MISSING_NONCE", "Sign-in message has no nonce")
    if not NONCE.fullmatch(message.nonce):
        raise SiwxError("INVALID_MESSAGE", "Sign-in message nonce must be 8 to 128 letters or digits")
    check_times(payload, message, now)
    return SiwxProof(text=text, message=message, address=address, signature=signature, solana=solana,
                     chain_id=chain_id)


# --- signatures ----------------------------------------------------------------------------------------------


def solana_signature_bytes(signature: str) -> bytes | None:
    """A 64-byte Ed25519 signature from base58 or (strict) base64."""
    for decode in (base58.b58decode, lambda s: base64.b64decode(s, validate=True)):
        try:
            raw = decode(signature)
        except ValueError:  # binascii.Error is a ValueError
            continue
        if len(raw) == 64:
            return raw
    return None


def signature_recovers(proof: SiwxProof) -> bool:
    """EOA (EIP-191 personal_sign) recovery, or Ed25519 for Solana."""
    if proof.solana:
        raw = solana_signature_bytes(proof.signature)
        if raw is None:
            return False
        try:
            nacl.signing.VerifyKey(base58.b58decode(proof.address)).verify(proof.text.encode(), raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True
    try:
        signer = Account.recover_message(encode_defunct(text=proof.text), signature=proof.signature)
    except Exception:  # malformed hex, wrong length, bad v/r/s: eth-account raises several types
        return False
    return signer.lower() == proof.address.lower()


def verify_siwx_header(
    value: str, settings: Settings, now: float | None = None, *, server_origin: str | None = None
) -> SiwxIdentity:
    """Check a header fully, offline (EOA and Ed25519 signatures only). Raises SiwxError."""
    proof = read_siwx_header(value, settings, now, server_origin=server_origin)
    if not signature_recovers(proof):
        raise SiwxError("INVALID_SIGNATURE", "Sign-in signature does not match the address")
    return proof.identity("ed25519" if proof.solana else "eip191")


async def verify_siwx(
    value: str, settings: Settings, now: float | None = None, *, server_origin: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> SiwxIdentity:
    """`verify_siwx_header`, plus EIP-1271 smart wallets when `eip1271_rpc_url` is configured.

    EVM recovery is pure Python here (~5 ms without coincurve), so it runs off the event loop.
    """
    proof = read_siwx_header(value, settings, now, server_origin=server_origin)
    if await asyncio.to_thread(signature_recovers, proof):
        return proof.identity("ed25519" if proof.solana else "eip191")
    rpc_url = settings.eip1271_rpc_url
    if not proof.solana and rpc_url and await eip1271_is_valid(rpc_url, proof, client=client):
        return proof.identity("eip1271")
    raise SiwxError("INVALID_SIGNATURE", "Sign-in signature does not match the address")


def eip1271_call_data(digest: bytes, signature: bytes) -> str:
    """ABI-encode `isValidSignature(bytes32 hash, bytes signature)`."""
    padded = signature + b"\0" * (-len(signature) % 32)
    encoded = (EIP1271_MAGIC + digest + (64).to_bytes(32, "big") + len(signature).to_bytes(32, "big") + padded)
    return "0x" + encoded.hex()


async def eip1271_is_valid(rpc_url: str, proof: SiwxProof, *, client: httpx.AsyncClient | None = None) -> bool:
    """Ask the wallet contract (`eth_call` on the configured Base RPC) whether it accepts the signature over the
    EIP-191 digest of the message. Any RPC failure counts as "no"."""
    try:
        raw_signature = bytes.fromhex(proof.signature.removeprefix("0x"))
    except ValueError:
        return False
    digest = bytes(defunct_hash_message(text=proof.text))
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_call",
               "params": [{"to": proof.address, "data": eip1271_call_data(digest, raw_signature)}, "latest"]}
    owned = client is None
    http = client or httpx.AsyncClient(timeout=10)
    try:
        response = await http.post(rpc_url, json=request)
        result = response.json().get("result")
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    finally:
        if owned:
            await http.aclose()
    if not isinstance(result, str):
        return False
    try:
        returned = bytes.fromhex(result.removeprefix("0x"))
    except ValueError:
        return False
    return returned[:4] == EIP1271_MAGIC
