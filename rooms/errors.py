"""Domain errors. ``code`` is the signaling protocol's error code (signaling/protocol.py)."""

from __future__ import annotations


class RoomError(Exception):
    code: str = "internal"


class ConsultationFull(RoomError):
    code = "consultation_full"


class ConsultationEnded(RoomError):
    code = "consultation_ended"


class KindMismatch(RoomError):
    # A token for a one-to-one call must not open a seat in an existing ward round: that would
    # bypass the cap the host chose, so it is refused like any other authorisation failure.
    code = "forbidden"


class InvalidConsultationId(RoomError, ValueError):
    code = "forbidden"


class UnknownParticipant(RoomError, LookupError):
    # Usually a race (the participant left a moment ago), not a client bug worth more than this.
    code = "unexpected"


class WaitingRoomFull(RoomError):
    code = "waiting_room_full"
