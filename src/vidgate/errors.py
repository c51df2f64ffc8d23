"""One error hierarchy: each error knows its HTTP status and its public (Venice-shaped) body.

    VidgateError
    ├── InvalidRequest            400  {"error": ..., "details": ..., "issues": [...]}  (DetailedError)
    ├── AuthenticationFailed      401  {"error": "Authentication failed"}
    ├── PaymentRequired           402  x402 discovery body or INSUFFICIENT_BALANCE
    ├── Forbidden                 403
    ├── NotFound                  404  (MEDIA_NOT_FOUND, MODEL_NOT_FOUND)
    ├── Conflict                  409  (cancel of a finished job)
    ├── Gone                      410  (revoked / expired download link)
    ├── PayloadTooLarge           413  {"code": "PAYLOAD_TOO_LARGE", ...}
    ├── IdempotencyKeyReused      422  (same Idempotency-Key, another body)
    ├── RateLimited               429
    ├── ServiceUnavailable        503  (upstream, database or bucket unavailable; Retry-After)
    └── InferenceFailed           500  {"error": "Inference processing failed"}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class VidgateError(Exception):
    status_code: int = 500
    code: str = "UNKNOWN_ERROR"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


@dataclass
class Issue:
    """One zod-style validation issue: `path` names the field, `expected` lists allowed values."""

    path: list[str | int]
    message: str
    code: str = "custom"
    expected: str | None = None
    received: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "path": list(self.path), "message": self.message}
        if self.expected is not None:
            out["expected"] = self.expected
        if self.received is not None:
            out["received"] = self.received
        out.update(self.extra)
        return out

    def label(self) -> str:
        """`reference_image_urls[1]` style name of the field, for human-readable messages."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text or "body"


class InvalidRequest(VidgateError):
    status_code = 400
    code = "INVALID_REQUEST"

    def __init__(self, issues: list[Issue], message: str = "Invalid request parameters") -> None:
        super().__init__(message)
        self.issues = issues

    def body(self) -> dict[str, Any]:
        details: dict[str, Any] = {"_errors": []}
        for issue in self.issues:
            node = details
            for part in issue.path:
                node = node.setdefault(str(part), {"_errors": []})
            node["_errors"].append(issue.message)
        if not self.issues:
            details["_errors"].append(self.message)
        return {
            "error": self.message,
            "details": details,
            "issues": [issue.as_dict() for issue in self.issues],
        }

    def __str__(self) -> str:
        return "; ".join(f"{i.label()}: {i.message}" for i in self.issues) or self.message


def invalid(path: list[str | int] | str, message: str, **kwargs: Any) -> InvalidRequest:
    """Shorthand for a one-issue InvalidRequest whose top-level message names the field."""
    issue = Issue(path=[path] if isinstance(path, str) else path, message=message, **kwargs)
    return InvalidRequest([issue], message=f"{issue.label()}: {message}")


class BadRequest(VidgateError):
    """A 400 with a plain StandardError body ("Invalid JSON request", "model is required", ...)."""

    status_code = 400
    code = "INVALID_REQUEST"


class AuthenticationFailed(VidgateError):
    status_code = 401
    code = "AUTHENTICATION_FAILED"

    def __init__(self, message: str = "Authentication failed") -> None:
        super().__init__(message)


class PaymentRequired(VidgateError):
    """402 with a prepared body (x402 discovery document or the INSUFFICIENT_BALANCE error)."""

    status_code = 402

    def __init__(self, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body.get("error", "Payment required")), headers=headers)
        self._body = body

    def body(self) -> dict[str, Any]:
        return self._body


# Venice's first sentence is kept whoever runs the server: clients match on it (and on the code). The second one
# tells the user where to add credit: Venice's settings page only when the operator asks for Venice's texts
# (VIDGATE_VENICE_TEXTS); else the operator's VIDGATE_TOPUP_URL, or the operator themselves.
INSUFFICIENT_BALANCE_PREFIX = "Insufficient USD or Diem balance to complete request."
VENICE_INSUFFICIENT_BALANCE_MESSAGE = (
    f"{INSUFFICIENT_BALANCE_PREFIX} Visit https://venice.ai/settings/api to add credits.")
INSUFFICIENT_BALANCE_MESSAGE = f"{INSUFFICIENT_BALANCE_PREFIX} Ask the operator of this server to add credits."


def insufficient_balance_message(topup_url: str | None = None, *, venice_texts: bool = False) -> str:
    if venice_texts:
        return VENICE_INSUFFICIENT_BALANCE_MESSAGE
    if topup_url:
        return f"{INSUFFICIENT_BALANCE_PREFIX} Visit {topup_url} to add credits."
    return INSUFFICIENT_BALANCE_MESSAGE


def insufficient_balance(message: str = INSUFFICIENT_BALANCE_MESSAGE) -> PaymentRequired:
    """402 INSUFFICIENT_BALANCE. Raised where no settings are at hand (the ledger); the app's error handler puts
    the operator's message in (api/app.py)."""
    return PaymentRequired({"error": message, "code": "INSUFFICIENT_BALANCE"})


class Forbidden(VidgateError):
    status_code = 403
    code = "UNAUTHORIZED"


class NotFound(VidgateError):
    status_code = 404
    code = "MEDIA_NOT_FOUND"


MEDIA_NOT_FOUND_MESSAGE = "Media could not be found. Request may be invalid, expired, or deleted."


def media_not_found() -> NotFound:
    return NotFound(MEDIA_NOT_FOUND_MESSAGE)


class Gone(VidgateError):
    status_code = 410
    code = "GONE"


class Conflict(VidgateError):
    """409: the request cannot apply to the resource as it is now (cancel of a finished job)."""

    status_code = 409
    code = "CONFLICT"

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code}


class IdempotencyKeyReused(VidgateError):
    """422: an Idempotency-Key sent again with a different body (IETF draft-ietf-httpapi-idempotency-key)."""

    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used with a different request body; use a new key "
                         "for a new request")

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code}


class PayloadTooLarge(VidgateError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"

    def body(self) -> dict[str, Any]:
        return {"code": "PAYLOAD_TOO_LARGE", "error": self.message}


class UnsupportedMediaType(VidgateError):
    status_code = 415
    code = "INVALID_CONTENT_TYPE"


class RateLimited(VidgateError):
    status_code = 429
    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str = "Rate limit exceeded", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)


class ServiceUnavailable(VidgateError):
    """503: a dependency (an upstream provider, ...) cannot serve the request now; retry later."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"


class DatabaseUnavailable(ServiceUnavailable):
    """503: the database cannot be reached (or is restarting). Whatever the request wrote was one transaction,
    so it is there whole or not at all; the client retries after `Retry-After`, the node reconnects by itself."""

    code = "DATABASE_UNAVAILABLE"

    def __init__(self, message: str = "The database is unavailable; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": "2"})


class InferenceFailed(VidgateError):
    status_code = 500
    code = "INFERENCE_FAILED"

    def __init__(self, message: str = "Inference processing failed") -> None:
        super().__init__(message)


class NeedsConsent(VidgateError):
    """409 `needs_consent` (SPEC §5): face media without an attestation; the body names the roles and the policy."""

    status_code = 409
    code = "needs_consent"

    def __init__(self, roles: list[str], *, consent_version: str, policy_text: str, docs_url: str) -> None:
        super().__init__("Seedance consent is required for this request.")
        self.roles = list(roles)
        self.consent_version = consent_version
        self.policy_text = policy_text
        self.docs_url = docs_url

    def body(self) -> dict[str, Any]:
        return {
            "error": {"code": self.code, "message": self.message},
            "consent_flow": "seedance",
            "face_media_roles": list(self.roles),
            "consent": {"consent_version": self.consent_version, "policy_text": self.policy_text},
            "docs_url": self.docs_url,
        }
