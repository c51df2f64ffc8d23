"""An x402 facilitator client: `POST {url}/verify` and `POST {url}/settle` (X402.md §1.7).

Both endpoints take `{"x402Version", "paymentPayload", "paymentRequirements"}`. `/verify` answers
`{"isValid", "invalidReason"?, "payer"?}` and `/settle` answers a SettleResponse
`{"success", "errorReason"?, "payer"?, "transaction", "network"}`.

What went wrong matters to the caller, because it decides whether money may have moved:

- `FacilitatorUnavailable`: the request never reached the facilitator (connection refused, connect timeout).
  Nothing was settled.
- `FacilitatorTimeout`: the request was sent but no answer came in time. A settlement may still land.
- `FacilitatorError`: the facilitator answered with something that is not a verify/settle answer (an error
  status without one, or not JSON), or the connection broke after the request was sent.
  `delivered` says whether the facilitator is known to have answered at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

CONNECT_TIMEOUT_SECONDS = 5.0


class FacilitatorFailure(Exception):
    """Base class: the facilitator could not give a usable answer."""


class FacilitatorUnavailable(FacilitatorFailure):
    """The request did not reach the facilitator: nothing was verified or settled."""


class FacilitatorTimeout(FacilitatorFailure):
    """The request was sent and no answer came in time: the outcome is unknown."""


class FacilitatorError(FacilitatorFailure):
    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        # True: the facilitator answered (with an error status or junk), so it did not report a settlement.
        # False: the connection broke after the request was sent, so the outcome is unknown.
        self.answered = answered


@dataclass(frozen=True)
class VerifyResult:
    is_valid: bool
    invalid_reason: str | None = None
    payer: str | None = None


@dataclass(frozen=True)
class SettleResult:
    success: bool
    transaction: str = ""
    network: str | None = None
    payer: str | None = None
    error_reason: str | None = None


class FacilitatorClient:
    """Talks to one facilitator over HTTP. A client is cheap: each call opens and closes its own connection
    (top-ups are rare, and a settlement may outlive the request that started it)."""

    def __init__(self, base_url: str, *, verify_timeout: float, settle_timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.verify_timeout = verify_timeout
        self.settle_timeout = settle_timeout
        self._transport = transport

    @staticmethod
    def request_body(payload: dict[str, Any], requirements: dict[str, Any]) -> dict[str, Any]:
        return {"x402Version": payload["x402Version"], "paymentPayload": payload, "paymentRequirements": requirements}

    async def verify(self, payload: dict[str, Any], requirements: dict[str, Any]) -> VerifyResult:
        answer = await self._post("/verify", self.request_body(payload, requirements), self.verify_timeout)
        if not isinstance(answer.get("isValid"), bool):
            raise FacilitatorError("facilitator /verify answer has no boolean isValid", answered=True)
        return VerifyResult(
            is_valid=answer["isValid"], invalid_reason=_str_or_none(answer.get("invalidReason")),
            payer=_str_or_none(answer.get("payer")),
        )

    async def settle(self, payload: dict[str, Any], requirements: dict[str, Any]) -> SettleResult:
        answer = await self._post("/settle", self.request_body(payload, requirements), self.settle_timeout)
        if not isinstance(answer.get("success"), bool):
            raise FacilitatorError("facilitator /settle answer has no boolean success", answered=True)
        return SettleResult(
            success=answer["success"], transaction=_str_or_none(answer.get("transaction")) or "",
            network=_str_or_none(answer.get("network")), payer=_str_or_none(answer.get("payer")),
            error_reason=_str_or_none(answer.get("errorReason")),
        )

    async def _post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        url = self.base_url + path
        limits = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_SECONDS, timeout))
        try:
            async with httpx.AsyncClient(timeout=limits, transport=self._transport) as client:
                response = await client.post(url, content=orjson.dumps(body),
                                             headers={"Content-Type": "application/json"})
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise FacilitatorUnavailable(f"facilitator {path} unreachable: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise FacilitatorTimeout(f"facilitator {path} did not answer within {timeout:g}s") from exc
        except httpx.TransportError as exc:
            raise FacilitatorError(f"facilitator {path} connection failed: {exc!r}", answered=False) from exc
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        # Some facilitators answer a rejection with a 4xx status and a normal verify/settle body: use the body.
        if isinstance(answer, dict) and ("isValid" in answer or "success" in answer):
            return answer
        raise FacilitatorError(f"facilitator {path} answered HTTP {response.status_code} without a usable body",
                               answered=True)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
