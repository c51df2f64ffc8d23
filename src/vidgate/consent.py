"""Seedance face-media consent (SPEC §5): which inputs show a face, which of those this account already attested,
and the attestations themselves.

The rule, per request to one of the consent-era Seedance ids (the records with `face_consent`; never `*-basic`, never
text-to-video):

- Candidate media are the inputs in the face-eligible fields (`ROLE_BY_FIELD`), grouped by the sha256 of their
  bytes: the same bytes sent in two fields are one medium with two roles.
- A medium this account has already attested (same bytes, an unrevoked attestation under the current policy
  version) proceeds without a face check. The others are checked for a face (OpenCV, in worker threads).
- No new face media: proceed. New face media and no `consents.seedance`: 409 `needs_consent`, whose
  `face_media_roles` are the distinct roles of the new face media only, in the OpenAPI enum's order
  (`ROLE_ORDER`); attested inputs and face-free inputs are not listed. New face media with `consents.seedance`
  (its shape was already validated: three booleans, all true): proceed, and record one attestation per new face
  medium (its sha256 and its roles in this request).

Attestations are keyed by (account, provider, sha256 of the bytes): a re-encode, resize or crop is new media.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from vidgate.catalog.models import ModelSpec
from vidgate.catalog.request import VideoRequest
from vidgate.db import Database, consents
from vidgate.errors import NeedsConsent
from vidgate.media.faces import image_has_face, video_has_face
from vidgate.media.inputs import PreparedInputs
from vidgate.media.types import MediaFile
from vidgate.settings import Settings

log = logging.getLogger("vidgate.consent")

PROVIDER = "seedance"
# Request field (PreparedInputs.probed key) -> face_media_roles value.
ROLE_BY_FIELD = {
    "image_url": "image",
    "end_image_url": "end_image",
    "reference_image_urls": "reference_image",
    "video_url": "video",
    "reference_video_urls": "reference_video",
}
ROLE_ORDER = ("image", "end_image", "reference_image", "video", "reference_video")  # the OpenAPI enum's order
VIDEO_SAMPLES = 5


def applies_to(spec: ModelSpec) -> bool:
    return spec.face_consent


def ordered_roles(roles: Iterable[str]) -> list[str]:
    present = set(roles)
    return [role for role in ROLE_ORDER if role in present]


@dataclass(frozen=True)
class Medium:
    """One distinct input (by its bytes) in the face-eligible fields, with every role it plays."""

    sha256: str
    roles: tuple[str, ...]
    file: MediaFile  # the first file with these bytes (the kind says how to look for a face)


@dataclass(frozen=True)
class ConsentGrant:
    """What a request that passed the consent check still has to record: its new face media, if any."""

    account_id: str
    policy_version: str
    media: tuple[Medium, ...] = ()


def candidate_media(prepared: PreparedInputs | None) -> list[Medium]:
    """The request's face-eligible inputs, one per distinct sha256, in request order."""
    if prepared is None:
        return []
    files: dict[str, MediaFile] = {}
    roles: dict[str, list[str]] = {}
    for field, role in ROLE_BY_FIELD.items():
        for file, _info in prepared.probed.get(field, []):
            files.setdefault(file.sha256, file)
            roles.setdefault(file.sha256, []).append(role)
    return [Medium(sha, tuple(ordered_roles(roles[sha])), file) for sha, file in files.items()]


def has_face(file: MediaFile) -> bool:
    """Synchronous: run it in a thread. A file the detector cannot read (it passed probing, so rarely) counts as
    showing a face: the consent gate fails closed, asking rather than letting a face through unasked."""
    try:
        if file.kind == "video":
            return video_has_face(file.path, samples=VIDEO_SAMPLES)
        if file.kind == "image":
            return image_has_face(file.path)
    except Exception:
        log.warning("face detection failed on %s; treating it as showing a face", file.field, exc_info=True)
        return True
    return False


async def check_consent(db: Database, settings: Settings, account_id: str, spec: ModelSpec, req: VideoRequest,
                        prepared: PreparedInputs | None) -> ConsentGrant:
    """Decide the request's consent (see the module docstring): raises `NeedsConsent`, or returns what to record."""
    version = settings.consent_policy_version
    grant = ConsentGrant(account_id, version)
    if not applies_to(spec):
        return grant
    media = candidate_media(prepared)
    if not media:
        return grant
    shas = [m.sha256 for m in media]
    attested = await db.read(lambda conn: attested_sha256s(conn, account_id, PROVIDER, shas, version))
    unattested = [m for m in media if m.sha256 not in attested]
    if not unattested:
        return grant
    found = await asyncio.gather(*(asyncio.to_thread(has_face, m.file) for m in unattested))
    new_faces = tuple(m for m, face in zip(unattested, found, strict=True) if face)
    if not new_faces:
        return grant
    if not (req.consents or {}).get(PROVIDER):
        raise NeedsConsent(ordered_roles(role for m in new_faces for role in m.roles),
                           consent_version=version, policy_text=settings.consent_policy_text,
                           docs_url=settings.consent_docs_url)
    return ConsentGrant(account_id, version, new_faces)


async def record_consent(db: Database, grant: ConsentGrant, request_id: str) -> list[str]:
    """Store the grant's attestations (one write); returns the new attestation ids."""
    if not grant.media:
        return []
    return await db.write(lambda conn: record_attestations(conn, grant.account_id, PROVIDER, grant.media,
                                                           grant.policy_version, request_id))


# --- store (synchronous, on a Connection) --------------------------------------------------------------------


def attested_sha256s(conn: Connection, account_id: str, provider: str, sha256s: Iterable[str],
                     policy_version: str | None = None) -> set[str]:
    """Which of `sha256s` this account has an unrevoked attestation for (under `policy_version`, when given)."""
    wanted = sorted(set(sha256s))
    if not wanted:
        return set()
    query = select(consents.c.media_sha256).where(
        consents.c.account_id == account_id, consents.c.provider == provider,
        consents.c.media_sha256.in_(wanted), consents.c.revoked_at.is_(None),
    )
    if policy_version is not None:
        query = query.where(consents.c.policy_version == policy_version)
    return set(conn.execute(query).scalars())


def record_attestations(conn: Connection, account_id: str, provider: str, media: Iterable[Medium],
                        policy_version: str, request_id: str, now: float | None = None) -> list[str]:
    """One row per medium not already attested (checked again here, inside the write: two concurrent
    requests with the same bytes leave one attestation). Returns the ids of the rows written."""
    media = list(media)
    already = attested_sha256s(conn, account_id, provider, (m.sha256 for m in media), policy_version)
    now = time.time() if now is None else now
    ids: list[str] = []
    for medium in media:
        if medium.sha256 in already:
            continue
        already.add(medium.sha256)
        consent_id = "consent_" + uuid.uuid4().hex
        conn.execute(consents.insert().values(
            id=consent_id, account_id=account_id, provider=provider, media_sha256=medium.sha256,
            roles=json.dumps(list(medium.roles)), policy_version=policy_version, request_id=request_id,
            created_at=now, revoked_at=None,
        ))
        ids.append(consent_id)
    return ids


def list_attestations(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's unrevoked attestations, oldest first, in the API's shape."""
    rows = conn.execute(
        select(consents).where(consents.c.account_id == account_id, consents.c.revoked_at.is_(None))
        .order_by(consents.c.created_at, consents.c.id)
    ).mappings()
    return [
        {
            "id": row["id"],
            "provider": row["provider"],
            "media_sha256": row["media_sha256"],
            "face_media_roles": json.loads(row["roles"]),
            "policy_version": row["policy_version"],
            "created_at": iso_time(row["created_at"]),
            "request_id": row["request_id"],
        }
        for row in rows
    ]


def revoke_attestation(conn: Connection, account_id: str, consent_id: str, now: float | None = None) -> bool:
    """Revoke one of the account's attestations; False when it has no unrevoked one with that id.

    Every unrevoked attestation of the same bytes (same account and provider) goes with it, so the next request
    with those bytes asks again whatever else was recorded for them.
    """
    row = conn.execute(
        select(consents.c.provider, consents.c.media_sha256).where(
            consents.c.id == consent_id, consents.c.account_id == account_id, consents.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return False
    conn.execute(
        update(consents).where(
            consents.c.account_id == account_id, consents.c.provider == row.provider,
            consents.c.media_sha256 == row.media_sha256, consents.c.revoked_at.is_(None),
        ).values(revoked_at=time.time() if now is None else now)
    )
    return True


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
