"""A local x402 facilitator for tests: a real HTTP server on 127.0.0.1 with `/verify` and `/settle`.

It checks what it is sent the way the reference `exact` EVM facilitator does (X402.md §1.6–1.7): the body's
`x402Version` matches the payload's, the payload matches the requirements (scheme, network, recipient, the
exact amount), the validity window, and the EIP-3009 signature recovered with eth-account equals
`authorization.from`. `/settle` also remembers used (from, nonce) pairs, as the token contract would.
Every call is recorded, and every check that failed is listed in `problems`.

Behaviours (`mode`): "ok"; "reject" (/verify says isValid false); "settle_fail" (/settle says success false);
"slow" (/settle answers after `slow_seconds`); and `stop()` makes it "down" (connection refused) until `start()`.
`settle_delay` delays every settlement a little (to hold a payment in SETTLING).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

V1_CHAIN_IDS = {"base": 8453, "base-sepolia": 84532}


def eip3009_typed_data(*, name: str, version: str, chain_id: int, asset: str, authorization: dict[str, Any]
                       ) -> dict[str, Any]:
    """EIP-712 `TransferWithAuthorization` typed data for an x402 `exact` EVM authorization (string fields)."""
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
        "domain": {"name": name, "version": version, "chainId": chain_id, "verifyingContract": asset},
        "message": {
            "from": authorization["from"], "to": authorization["to"], "value": int(authorization["value"]),
            "validAfter": int(authorization["validAfter"]), "validBefore": int(authorization["validBefore"]),
            "nonce": bytes.fromhex(authorization["nonce"].removeprefix("0x")),
        },
    }


def chain_id_of(network: str) -> int | None:
    if network in V1_CHAIN_IDS:
        return V1_CHAIN_IDS[network]
    namespace, _, reference = network.partition(":")
    return int(reference) if namespace == "eip155" and reference.isdigit() else None


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    problems: list[str]


class LocalFacilitator:
    def __init__(self) -> None:
        self.mode = "ok"
        self.slow_seconds = 2.5
        self.settle_delay = 0.0
        self.calls: list[Call] = []
        self.used_nonces: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # --- lifecycle ---

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        facilitator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = facilitator.handle(self.path, raw, self.headers.get("Content-Type", ""))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Down: later connections are refused (the port stays reserved for `start()`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- what was seen ---

    def paths(self) -> list[str]:
        with self._lock:
            return [c.path for c in self.calls]

    def problems(self) -> list[str]:
        with self._lock:
            return [f"{c.path}: {p}" for c in self.calls for p in c.problems]

    # --- the protocol ---

    def handle(self, path: str, raw: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        if path not in ("/verify", "/settle"):
            return 404, {"error": "not found"}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problems = self.check(body) if isinstance(body, dict) else ["body is not a JSON object"]
        if not content_type.startswith("application/json"):
            problems.append(f"content type {content_type!r}")
        with self._lock:
            self.calls.append(Call(path, body if isinstance(body, dict) else {}, problems))
        payer = _get(body, "paymentPayload", "payload", "authorization", "from")
        network = _get(body, "paymentRequirements", "network")
        if path == "/verify":
            if problems:
                return 400, {"isValid": False, "invalidReason": problems[0], "payer": payer}
            if self.mode == "reject":
                return 200, {"isValid": False, "invalidReason": "insufficient_funds", "payer": payer}
            return 200, {"isValid": True, "payer": payer}
        # /settle
        if self.mode == "slow":
            time.sleep(self.slow_seconds)
        elif self.settle_delay:
            time.sleep(self.settle_delay)
        failed = {"success": False, "transaction": "", "network": network, "payer": payer}
        if problems:
            return 400, {**failed, "errorReason": problems[0]}
        if self.mode == "settle_fail":
            return 200, {**failed, "errorReason": "insufficient_funds"}
        nonce_key = (payer.lower(), _get(body, "paymentPayload", "payload", "authorization", "nonce").lower())
        with self._lock:
            if nonce_key in self.used_nonces:
                return 200, {**failed, "errorReason": "invalid_transaction_state"}
            self.used_nonces.add(nonce_key)
        return 200, {"success": True, "transaction": "0x" + secrets.token_hex(32), "network": network, "payer": payer}

    def check(self, body: dict[str, Any]) -> list[str]:
        """The reference `exact` EVM facilitator's verification, minus the chain (X402.md §1.6)."""
        problems: list[str] = []
        version = body.get("x402Version")
        payload, req = body.get("paymentPayload"), body.get("paymentRequirements")
        if version not in (1, 2):
            return [f"x402Version {version!r}"]
        if not isinstance(payload, dict) or not isinstance(req, dict):
            return ["paymentPayload / paymentRequirements missing"]
        if payload.get("x402Version") != version:
            problems.append("paymentPayload.x402Version differs from the body's")
        if version == 2:
            accepted = payload.get("accepted") or {}
            if accepted != req:
                problems.append("paymentPayload.accepted differs from paymentRequirements")
            scheme, network, amount = accepted.get("scheme"), accepted.get("network"), req.get("amount")
        else:
            scheme, network, amount = payload.get("scheme"), payload.get("network"), req.get("maxAmountRequired")
            for field in ("resource", "description", "maxTimeoutSeconds"):
                if field not in req:
                    problems.append(f"v1 requirements lack {field}")
        if scheme != "exact" or req.get("scheme") != "exact":
            problems.append("unsupported_scheme")
        if network != req.get("network"):
            problems.append("invalid_network")
        chain_id = chain_id_of(str(req.get("network")))
        extra = req.get("extra") or {}
        if chain_id is None or not extra.get("name") or not extra.get("version"):
            return [*problems, "invalid_payment_requirements"]
        inner = payload.get("payload") or {}
        auth, signature = inner.get("authorization") or {}, inner.get("signature")
        try:
            if str(auth["to"]).lower() != str(req.get("payTo")).lower():
                problems.append("invalid_exact_evm_payload_recipient_mismatch")
            if int(auth["value"]) != int(amount):
                problems.append("invalid_exact_evm_payload_authorization_value_mismatch")
            now = time.time()
            if int(auth["validBefore"]) < now + 6:
                problems.append("invalid_exact_evm_payload_authorization_valid_before")
            if int(auth["validAfter"]) > now:
                problems.append("invalid_exact_evm_payload_authorization_valid_after")
            typed = eip3009_typed_data(name=extra["name"], version=extra["version"], chain_id=chain_id,
                                       asset=req["asset"], authorization=auth)
            signer = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
            if signer.lower() != str(auth["from"]).lower():
                problems.append("invalid_exact_evm_payload_signature")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"invalid_payload: {exc!r}")
        return problems


def _get(node: Any, *keys: str) -> Any:
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node
