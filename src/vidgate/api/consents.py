"""`/consents`: a caller's face-media consent attestations, and revoking them (SPEC §5)."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
