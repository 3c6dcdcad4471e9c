"""Who a Room holds, and how it reaches them: Members and their links.

A link is a participant's socket (``ClientConnection``) or, while that socket is down and the
session is held for a resume, a ``HeldLink`` that keeps what they are sent.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Protocol

from media.client import Kind
from media.config import VideoCodec
from rooms.consultation import Participant
from signaling import protocol as p
from signaling.tokens import Grant

# What a held session keeps for its client; more means it is not worth resuming.
HELD_MESSAGES = 256


class ParticipantLink(Protocol):
    """How a Room reaches one participant (their socket, on this node or another)."""

    def post(self, message: p._Message) -> None: ...

    def end(self, reason: str, message: str | None = None) -> None:
        """Send what is queued, then ``bye`` with ``reason`` (and a note), then close."""


@dataclass
class Member:
    participant: Participant
    grant: Grant
    link: ParticipantLink
    # What they asked for at join, used when they are let in.
    publish: tuple[Kind, ...] = ()
    video_codecs: frozenset[VideoCodec] | None = None
    # False while in the waiting room.
    admitted: bool = False
    arrived_at: float = 0.0
    # Join time (monotonic): from their join message, or from being let in; how long until
    # ``joined`` was sent; when their first offer left; whether it has been counted.
    join_started: float = 0.0
    join_setup_s: float | None = None
    first_offer_at: float | None = None
    join_timed: bool = False
    # Presented to resume this session after the socket drops (Joined.resumeToken).
    resume_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def id(self) -> str:
        return self.participant.id


# A leaked patient link must not fill memory or the host's list: past this, newcomers are
# refused (``waiting_room_full``) until someone is let in or leaves.
WAITING_ROOM_CAP = 20




class HeldLink:
    """Stands in for a participant's socket while it is down: keeps what they are sent, up
    to a bound, and whether the server ended their session meanwhile."""

    def __init__(self) -> None:
        self.messages: list[p._Message] = []
        self.overflowed = False
        self.ended: tuple[str, str | None] | None = None

    def post(self, message: p._Message) -> None:
        if len(self.messages) >= HELD_MESSAGES:
            self.overflowed = True
        else:
            self.messages.append(message)

    def end(self, reason: str, message: str | None = None) -> None:
        self.ended = self.ended or (reason, message)

    @property
    def resumable(self) -> bool:
        return not self.overflowed and self.ended is None
