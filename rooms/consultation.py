"""Consultation and Participant: plain values, replaced (never mutated) by the RoomStore."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from rooms.errors import InvalidConsultationId
from rooms.roles import Role


class ConsultationKind(StrEnum):
    one_to_one = "one_to_one"
    joint = "joint"
    ward_round = "ward_round"


PARTICIPANT_CAP: Mapping[ConsultationKind, int] = MappingProxyType(
    {
        # Doctor and patient (or doctor and expert): nobody else belongs in the room.
        ConsultationKind.one_to_one: 2,
        # Joint consultation = a multidisciplinary team (several experts) plus the local doctor
        # and the patient; 8 covers a real MDT and keeps a full mesh of Consumers
        # (n·(n-1) ≈ 56 per media) cheap for one Worker core.
        ConsultationKind.joint: 8,
        # Ward round = the cart moving bed to bed + several experts + observers (students),
        # most of whom only subscribe, so the room can be larger than a joint consultation.
        ConsultationKind.ward_round: 12,
    }
)

# Opaque ids only: a hospital system must not put a patient's name or record number in the
# URL-visible room id, and the charset is safe in paths, logs and Redis keys as is.
_CONSULTATION_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")


def validate_consultation_id(s: object) -> str:
    """Return ``s`` unchanged if it is an acceptable consultation id, else raise."""
    if not isinstance(s, str) or _CONSULTATION_ID.fullmatch(s) is None:
        # Never echo the value: it may be exactly the identifying data we are refusing.
        raise InvalidConsultationId(
            "consultation id must be 6-64 characters of A-Z, a-z, 0-9, '_' or '-'"
        )
    return s


def new_consultation_id() -> str:
    # 96 random bits: unguessable, so knowing one consultation's id says nothing of another's.
    return secrets.token_urlsafe(12)


def new_participant_id() -> str:
    # Per session, scoped to one consultation: short is enough, and hex is safe everywhere.
    return "P" + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Consultation:
    id: str
    kind: ConsultationKind
    created_at: float
    ended: bool = False


@dataclass(frozen=True, slots=True)
class Participant:
    # Random per session: a reconnect gets a new one, so stale messages cannot hit the new one.
    id: str
    # Opaque, from the token's ``sub``: what recognises the same person reconnecting.
    identity: str
    # Display name, possibly a patient's real name: left out of repr() so that logging a
    # Participant, or an exception message built from one, never leaks it.
    name: str = field(repr=False)
    role: Role
    joined_at: float
    audio_muted: bool = False
    video_muted: bool = False
