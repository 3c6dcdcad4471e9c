"""Who may do what in a consultation: one table, checked on every signaling message."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Role(StrEnum):
    # The host: the grassroots doctor who opened the consultation.
    doctor = "doctor"
    expert = "expert"
    patient = "patient"
    # Receives only: students, family, a second nurse on a ward round.
    observer = "observer"


class Permission(StrEnum):
    publish = "publish"
    subscribe = "subscribe"
    mute_others = "mute_others"
    remove_participant = "remove_participant"
    end_consultation = "end_consultation"
    record = "record"
    # Letting people in from the waiting room (not built yet; granted now so tokens minted
    # today keep working when it lands).
    admit = "admit"
    view_recordings = "view_recordings"


# Read-only so no caller can widen a role at run time.
PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.doctor: frozenset(Permission),
        Role.expert: frozenset(
            {Permission.publish, Permission.subscribe, Permission.view_recordings}
        ),
        Role.patient: frozenset({Permission.publish, Permission.subscribe}),
        Role.observer: frozenset({Permission.subscribe}),
    }
)


def can(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]
