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
    # Runs the waiting room and assists the doctor: sends and receives, admits people.
    nurse = "nurse"
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
    # Showing everyone in the call a photo or a DICOM image (uploaded over HTTP). Patients
    # have it: the photo of their own wound or rash is the commonest image in a
    # teleconsultation, and they are let in by the host, who can remove them.
    share_images = "share_images"
    # Running a ward round: giving and taking the floor, muting all but oneself, moving
    # through the agenda of beds. The attending (the doctor) has it.
    floor = "floor"
    # Publishing the screen (getDisplayMedia) as an extra video track, shown large to
    # everyone. Not patients: a screen shows whatever else is open on it, and a patient's
    # share would take over every page; they show a wound with a second camera instead
    # (``publish``).
    share_screen = "share_screen"


# Read-only so no caller can widen a role at run time.
PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.doctor: frozenset(Permission),
        Role.expert: frozenset(
            {
                Permission.publish,
                Permission.subscribe,
                Permission.view_recordings,
                Permission.share_images,
                Permission.share_screen,
            }
        ),
        Role.patient: frozenset(
            {Permission.publish, Permission.subscribe, Permission.share_images}
        ),
        Role.nurse: frozenset(
            {
                Permission.publish,
                Permission.subscribe,
                Permission.admit,
                Permission.share_images,
                Permission.share_screen,
            }
        ),
        Role.observer: frozenset({Permission.subscribe}),
    }
)


def can(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


class StaffRole(StrEnum):
    """A staff account's role at its site (the front desk). ``admin`` runs the site and
    takes part in no call; the others join calls as the call Role of the same name."""

    admin = "admin"
    doctor = "doctor"
    nurse = "nurse"
    expert = "expert"


def call_role(staff_role: StaffRole) -> Role | None:
    """The Role a staff member joins a consultation with; None for a site admin."""
    return None if staff_role is StaffRole.admin else Role(staff_role.value)
