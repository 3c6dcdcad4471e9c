"""Join links handed out for a consultation, so they can be shown again and revoked.

A link for a patient or relative keeps its token (sealed: it is a password for the call),
for its QR code and printable page; a staff member's link (the console's Join) keeps only
its ``jti``. Either is revoked by its ``jti`` when the appointment moves (the caller revokes
through the revocation records, then ``mark_revoked``), and the patients' links are issued
again for the new time. Tokens are minted by the caller (signaling), valid for the
appointment's window (rooms/records/scheduling.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert, select, update

from rooms.records.access import Actor
from rooms.records.clinical import ClinicalCipher, ClinicalText, Sealer
from rooms.records.consultations import Consultation, Consultations, cares_for
from rooms.records.database import Database
from rooms.records.errors import Forbidden, InvalidInput, NotFound
from rooms.records.ids import new_id
from rooms.records.schema import invitations
from rooms.records.sites import clean_name
from rooms.records.timeline import EventKind, append
from rooms.roles import Role

# Roles a link may carry for someone without an account. A doctor's, nurse's or expert's
# link goes to a staff member by name (Consultations.add_staff), never to an anonymous link.
LINK_ROLES = (Role.patient, Role.observer)
MAX_INVITEE_NAME = 200


@dataclass(frozen=True)
class Invitation:
    id: str
    consultation_id: str
    jti: str
    role: Role
    identity: str
    staff_id: str | None
    name_sealed: bytes = field(repr=False)
    token_sealed: bytes | None = field(repr=False)
    valid_from: datetime
    valid_until: datetime
    sequence: int
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewLink:
    """A minted token and what it says, for ``Invitations.add``."""

    jti: str
    role: Role
    identity: str
    name: str = field(repr=False)
    token: str = field(repr=False)
    valid_from: datetime
    valid_until: datetime
    sequence: int


def invitee_name(value: str) -> str:
    return clean_name(value, "name", MAX_INVITEE_NAME)


class Invitations:
    def __init__(
        self, database: Database, consultations: Consultations, cipher: ClinicalCipher
    ) -> None:
        self._db = database
        self._consultations = consultations
        self._sealer = Sealer(cipher, "invitations")

    @staticmethod
    def _require_role(role: Role) -> None:
        if role not in LINK_ROLES:
            raise InvalidInput("a link is for a patient or an observer")

    @classmethod
    def require_inviter(cls, actor: Actor, c: Consultation, role: Role) -> None:
        """Patients' and observers' links are made by the requesting site's doctors and
        nurses (and its system)."""
        cls._require_role(role)
        if not cares_for(actor, c):
            raise Forbidden("only the requesting site's doctors and nurses invite by link")

    async def add(
        self,
        actor: Actor,
        c: Consultation,
        link: NewLink,
        *,
        staff_id: str | None = None,
        reissue: bool = False,
        keep_token: bool = True,
        now: datetime | None = None,
    ) -> Invitation:
        """Record a link just minted. A link for someone without an account needs
        ``require_inviter`` (or, ``reissue``: the same person's link again for a new time, by
        whoever moved the appointment); a staff member's, that they take part."""
        if staff_id is not None:
            if staff_id not in {m.staff_id for m in await self._consultations.members(c.id)}:
                if staff_id != actor.id or await self._consultations.call_role(actor, c) is None:
                    raise Forbidden("a staff link is for staff taking part")
        elif reissue:
            self._require_role(link.role)
            if not (cares_for(actor, c) or actor.id in await self._consultations.experts(c.id)):
                raise Forbidden("only the doctors and experts of the consultation move it")
        else:
            self.require_inviter(actor, c, link.role)
        invitation_id = new_id("inv")
        at = now or datetime.now(UTC)
        name_sealed = await self._sealer.seal(c.id, "name", invitation_id, link.name)
        token_sealed = (
            await self._sealer.seal(c.id, "token", invitation_id, link.token)
            if keep_token
            else None
        )
        row = {
            "id": invitation_id,
            "consultation_id": c.id,
            "jti": link.jti,
            "role": link.role.value,
            "identity": link.identity,
            "staff_id": staff_id,
            "name_sealed": name_sealed,
            "token_sealed": token_sealed,
            "valid_from": link.valid_from,
            "valid_until": link.valid_until,
            "sequence": link.sequence,
            "created_by": actor.id,
            "created_at": at,
            "revoked_at": None,
            "revoked_by": None,
        }
        async with self._db.engine.begin() as conn:
            await conn.execute(insert(invitations).values(**row))
            if staff_id is None:
                await append(conn, c.id, EventKind.invited, by=actor.id, at=at, ref=invitation_id)
        return _invitation(row)

    async def get(self, actor: Actor, invitation_id: str) -> Invitation:
        found = await self._one(invitations.c.id == invitation_id)
        if found is None:
            raise NotFound("no such invitation")
        try:
            await self._consultations.get(actor, found.consultation_id)
        except NotFound:
            raise NotFound("no such invitation") from None
        return found

    async def links(self, consultation_id: str) -> list[Invitation]:
        """Links for people without an account (newest first), revoked ones included."""
        return await self._many(
            invitations.c.consultation_id == consultation_id, invitations.c.staff_id.is_(None)
        )

    async def staff_link(
        self, consultation_id: str, staff_id: str, sequence: int, now: datetime
    ) -> Invitation | None:
        """A staff member's live link for this appointment's time, not expired (it may not
        have opened yet: the join page then says when to come back)."""
        for found in await self._many(
            invitations.c.consultation_id == consultation_id,
            invitations.c.staff_id == staff_id,
            invitations.c.revoked_at.is_(None),
            invitations.c.sequence == sequence,
        ):
            if now < found.valid_until and found.token_sealed is not None:
                return found
        return None

    async def stale(self, consultation_id: str, sequence: int) -> list[Invitation]:
        """Live links made for an earlier time of the appointment: to revoke."""
        return await self._many(
            invitations.c.consultation_id == consultation_id,
            invitations.c.revoked_at.is_(None),
            invitations.c.sequence < sequence,
        )

    async def mark_revoked(
        self, invitation_id: str, by: str, *, now: datetime | None = None
    ) -> None:
        """After its jti was revoked in the revocation records."""
        async with self._db.engine.begin() as conn:
            await conn.execute(
                update(invitations)
                .where(invitations.c.id == invitation_id, invitations.c.revoked_at.is_(None))
                .values(revoked_at=now or datetime.now(UTC), revoked_by=by)
            )

    async def name(self, invitation: Invitation) -> ClinicalText:
        return await self._sealer.open(
            invitation.consultation_id, "name", invitation.id, invitation.name_sealed
        )

    async def token(self, invitation: Invitation) -> ClinicalText:
        return await self._sealer.open(
            invitation.consultation_id, "token", invitation.id, invitation.token_sealed
        )

    async def _one(self, where: object) -> Invitation | None:
        found = await self._many(where)
        return found[0] if found else None

    async def _many(self, *where: object) -> list[Invitation]:
        query = (
            select(invitations)
            .where(*where)  # type: ignore[arg-type]
            .order_by(invitations.c.created_at.desc(), invitations.c.id)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_invitation(r) for r in rows]


def _invitation(row: object) -> Invitation:
    r = dict(row)  # type: ignore[call-overload]
    token = r["token_sealed"]
    return Invitation(
        id=r["id"],
        consultation_id=r["consultation_id"],
        jti=r["jti"],
        role=Role(r["role"]),
        identity=r["identity"],
        staff_id=r["staff_id"],
        name_sealed=bytes(r["name_sealed"]),
        token_sealed=bytes(token) if token is not None else None,
        valid_from=r["valid_from"],
        valid_until=r["valid_until"],
        sequence=int(r["sequence"]),
        created_by=r["created_by"],
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
        revoked_by=r["revoked_by"],
    )
