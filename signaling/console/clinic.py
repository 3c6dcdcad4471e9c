"""The clinical front desk's actions, one method each, for the console pages and the JSON API
alike: the records decide who may do what (rooms/records); this adds what the server does
around them. Every action is audited (opaque ids only: never a name, a reason, a file name
or an opinion's text) and publishes a change notice to the consoles of the sites concerned,
which refetch what they show through the same permission checks.

Links: accepting a request gives the requesting doctor and the accepting expert their own
links for the appointment; a console's Join opens the staff member's live link, or mints one
for the window; moving the appointment revokes every link made for the old time (through the
revocation records, so the join page and a live call refuse them) and issues the patients'
and observers' links again for the new time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rooms.records.access import Actor
from rooms.records.attachments import Attachment, MediaType, new_attachment_id
from rooms.records.clinic import Clinic
from rooms.records.clinical import ClinicalText, Shredded
from rooms.records.consultations import Consultation
from rooms.records.errors import Forbidden, InvalidInput
from rooms.records.invitations import Invitation, Invitations, invitee_name
from rooms.records.opinions import Opinion, OpinionFields
from rooms.records.requests import ConsultationRequest
from rooms.records.revocations import Scope
from rooms.records.scheduling import Appointment
from rooms.records.staff import StaffMember
from rooms.roles import Role, call_role
from signaling import events as ev
from signaling import tokens
from signaling.console.attachments import AttachmentFiles
from signaling.console.calendar import appointment_ics
from signaling.console.forms import FilePart
from signaling.console.links import join_url, mint_link, qr_png, staff_identity
from signaling.room.revocation import RevocationGuard

if TYPE_CHECKING:
    from signaling.console.frontdesk import FrontDeskService

TOPIC = "consultations"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ClinicService:
    frontdesk: FrontDeskService
    clinic: Clinic
    files: AttachmentFiles
    revocation: RevocationGuard
    events: ev.EventStream
    secret: bytes = field(repr=False)
    public_url: str | None = None
    clock: Callable[[], datetime] = _now

    # ------------------------------------------------------------ helpers

    def base_url(self, request: web.Request) -> str:
        """Where invitees reach the server: --public-url, else how this request came."""
        return (self.public_url or f"{request.scheme}://{request.host}").rstrip("/")

    def _record(self, action: str, actor: Actor, c: Consultation, **fields: Any) -> None:
        self.frontdesk.audit.record(
            action, by=actor.id, site=c.site_id, consultation=c.id, **fields
        )

    def _changed(self, c: Consultation, *more_sites: str | None) -> None:
        self.frontdesk.changed(TOPIC, c.site_id, c.expert_site_id, *more_sites)

    async def _appointment(self, c: Consultation) -> Appointment:
        appointment = await self.clinic.consultations.appointment(c.id)
        if appointment is None:
            raise InvalidInput("this consultation has no time yet", code="not_scheduled")
        return appointment

    # ------------------------------------------------------------ requests

    async def request(
        self,
        actor: Actor,
        department_id: str,
        *,
        urgency: str,
        reason: str,
        patient: str,
        preferred_times: list[datetime],
        files: Sequence[FilePart] = (),
    ) -> Consultation:
        """Ask a department; attachments are checked before anything is stored, so a file
        that is refused refuses the request."""
        await self.clinic.requests.require_may_request(actor, department_id)
        prepared = [(part.filename, *await self.files.prepare(part.data)) for part in files]
        request, c = await self.clinic.requests.create(
            actor,
            department_id,
            urgency=urgency,
            reason=reason,
            patient=patient,
            preferred_times=preferred_times,
            now=self.clock(),
        )
        self._record(
            "consultation_requested",
            actor,
            c,
            request=request.id,
            department=request.department_id,
            urgency=request.urgency.value,
        )
        for name, media_type, data in prepared:
            await self._store(actor, c, name, media_type, data)
        self._changed(c)
        return c

    async def accept(
        self, actor: StaffMember, request_id: str, starts_at: datetime, minutes: int
    ) -> Consultation:
        appointment = await self.clinic.requests.accept(
            actor.actor, request_id, starts_at, minutes, now=self.clock()
        )
        request = await self.clinic.requests.get(actor.actor, request_id)
        c = await self.clinic.consultations.get(actor.actor, request.consultation_id)
        self._record(
            "request_accepted", actor.actor, c, request=request_id, appointment=appointment.id
        )
        await self._staff_links(actor.actor, c, appointment, request)
        self._changed(c)
        return c

    async def propose(
        self, actor: StaffMember, request_id: str, starts_at: datetime, minutes: int
    ) -> Consultation:
        request = await self.clinic.requests.propose(
            actor.actor, request_id, starts_at, minutes, now=self.clock()
        )
        c = await self.clinic.consultations.get(actor.actor, request.consultation_id)
        self._record("request_proposed", actor.actor, c, request=request_id)
        self._changed(c)
        return c

    async def decline(self, actor: StaffMember, request_id: str, reason: str) -> Consultation:
        request = await self.clinic.requests.decline(
            actor.actor, request_id, reason, now=self.clock()
        )
        c = await self.clinic.consultations.get(actor.actor, request.consultation_id)
        self._record("request_declined", actor.actor, c, request=request_id)
        self._changed(c)
        return c

    async def accept_proposal(self, actor: Actor, request_id: str) -> Consultation:
        appointment = await self.clinic.requests.accept_proposal(
            actor, request_id, now=self.clock()
        )
        request = await self.clinic.requests.get(actor, request_id)
        c = await self.clinic.consultations.get(actor, request.consultation_id)
        self._record("proposal_accepted", actor, c, request=request_id, appointment=appointment.id)
        await self._staff_links(actor, c, appointment, request)
        self._changed(c)
        return c

    async def counter(
        self, actor: Actor, request_id: str, preferred_times: list[datetime]
    ) -> Consultation:
        request = await self.clinic.requests.counter(
            actor, request_id, preferred_times, now=self.clock()
        )
        c = await self.clinic.consultations.get(actor, request.consultation_id)
        self._record("proposal_countered", actor, c, request=request_id)
        self._changed(c)
        return c

    async def _staff_links(
        self,
        actor: Actor,
        c: Consultation,
        appointment: Appointment,
        request: ConsultationRequest,
    ) -> None:
        """The requesting doctor's and the accepting expert's own links for the time."""
        for staff_id in dict.fromkeys((request.requested_by, request.decided_by)):
            if staff_id is None or not staff_id.startswith("stf_"):
                continue  # asked by a hospital system: no person to give a link to
            member = await self.frontdesk.desk.staff.get(staff_id)
            await self._staff_link(actor, c, appointment, member)

    async def _staff_link(
        self, actor: Actor, c: Consultation, appointment: Appointment, member: StaffMember
    ) -> Invitation:
        role = call_role(member.role)
        if role is None:
            raise Forbidden("administrators take part in no call")
        for m in await self.clinic.consultations.members(c.id):
            if m.staff_id == member.id:
                role = m.role
        link = mint_link(
            self.secret,
            c,
            appointment,
            role=role,
            identity=staff_identity(member.id),
            name=member.display_name,
            now=self.clock(),
        )
        invitation = await self.clinic.invitations.add(
            actor, c, link, staff_id=member.id, now=self.clock()
        )
        self._record(
            "staff_link_issued",
            actor,
            c,
            invitation=invitation.id,
            staff=member.id,
            role=role.value,
        )
        return invitation

    # ------------------------------------------------------------ consultations

    async def start_now(
        self, actor: Actor, kind: str, minutes: int, patient: str | None
    ) -> Consultation:
        c, appointment = await self.clinic.consultations.start_now(
            actor, kind, minutes=minutes, patient=patient, now=self.clock()
        )
        self._record(
            "consultation_started", actor, c, kind=c.kind.value, appointment=appointment.id
        )
        self._changed(c)
        return c

    async def add_staff(self, actor: Actor, consultation_id: str, staff_id: str) -> None:
        added = await self.clinic.consultations.add_staff(
            actor, consultation_id, staff_id, now=self.clock()
        )
        c = await self.clinic.consultations.get(actor, consultation_id)
        self._record("staff_invited", actor, c, staff=added.id)
        # Their console shows it at once, whichever site they are at.
        self._changed(c, added.site_id)

    async def reschedule(
        self, actor: Actor, consultation_id: str, starts_at: datetime, minutes: int
    ) -> Appointment:
        moved = await self.clinic.consultations.reschedule(
            actor, consultation_id, starts_at, minutes, now=self.clock()
        )
        c = await self.clinic.consultations.get(actor, consultation_id)
        revoked, reissued = await self._renew_links(actor, c, moved)
        self._record(
            "consultation_rescheduled",
            actor,
            c,
            appointment=moved.id,
            sequence=moved.sequence,
            revoked=revoked,
            reissued=reissued,
        )
        self._changed(c)
        return moved

    async def _renew_links(
        self, actor: Actor, c: Consultation, appointment: Appointment
    ) -> tuple[int, int]:
        """Revoke every link made for an earlier time; issue the patients' and observers'
        again. Revoked in the revocation records first, then marked here: a failure half
        way leaves the rest live and listed as stale for the next try."""
        revoked = reissued = 0
        invitations = self.clinic.invitations
        for old in await invitations.stale(c.id, appointment.sequence):
            await self.revocation.revoke(
                c.id,
                Scope.token,
                old.jti,
                reason="rescheduled",
                by=actor.id,
                expires_at=int(old.valid_until.timestamp()) + 60,
            )
            await invitations.mark_revoked(old.id, actor.id, now=self.clock())
            revoked += 1
            if old.staff_id is not None:
                continue  # staff open their new link from the console
            name = await invitations.name(old)
            if name.text is None:
                continue
            link = mint_link(
                self.secret,
                c,
                appointment,
                role=old.role,
                identity=old.identity,
                name=name.text,
                now=self.clock(),
            )
            await invitations.add(actor, c, link, reissue=True, now=self.clock())
            reissued += 1
        return revoked, reissued

    # ------------------------------------------------------------ links

    async def invite(self, actor: Actor, consultation_id: str, role: str, name: str) -> Invitation:
        """A link for a patient, relative or observer, valid for the appointment's window."""
        c = await self.clinic.consultations.get(actor, consultation_id)
        try:
            link_role = Role(role)
        except ValueError:
            raise InvalidInput("a link is for a patient or an observer") from None
        Invitations.require_inviter(actor, c, link_role)
        if await self.clinic.consultations.ended(c.id):
            raise InvalidInput("this consultation has ended", code="ended")
        appointment = await self._appointment(c)
        link = mint_link(
            self.secret,
            c,
            appointment,
            role=link_role,
            identity=tokens.new_identity(),
            name=invitee_name(name),
            now=self.clock(),
        )
        invitation = await self.clinic.invitations.add(actor, c, link, now=self.clock())
        self._record("invitation_created", actor, c, invitation=invitation.id, role=link_role.value)
        self._changed(c)
        return invitation

    async def link(
        self, actor: Actor, invitation_id: str, base_url: str
    ) -> tuple[Invitation, Consultation, str, ClinicalText]:
        """A patient's link, to show (page, QR code, print): for those who may invite."""
        invitation = await self.clinic.invitations.get(actor, invitation_id)
        c = await self.clinic.consultations.get(actor, invitation.consultation_id)
        Invitations.require_inviter(actor, c, invitation.role)
        token = await self.clinic.invitations.token(invitation)
        if token.text is None:
            raise Shredded("this consultation's data key has been destroyed")
        self._record("invitation_shown", actor, c, invitation=invitation.id)
        return (
            invitation,
            c,
            join_url(base_url, token.text),
            await self.clinic.invitations.name(invitation),
        )

    async def qr(self, actor: Actor, invitation_id: str, base_url: str) -> bytes:
        _, _, url, _ = await self.link(actor, invitation_id, base_url)
        return await asyncio.to_thread(qr_png, url)

    async def join(self, member: StaffMember, consultation_id: str, base_url: str) -> str:
        """The staff member's join URL: their live link for this time, or a new one."""
        actor = member.actor
        c = await self.clinic.consultations.get(actor, consultation_id)
        if await self.clinic.consultations.call_role(actor, c) is None:
            raise Forbidden("you do not take part in this consultation", code="not_taking_part")
        if await self.clinic.consultations.ended(c.id):
            raise InvalidInput("this consultation has ended", code="ended")
        appointment = await self._appointment(c)
        now = self.clock()
        invitation = await self.clinic.invitations.staff_link(
            c.id, member.id, appointment.sequence, now
        )
        if invitation is None:
            invitation = await self._staff_link(actor, c, appointment, member)
        token = await self.clinic.invitations.token(invitation)
        if token.text is None:
            raise Shredded("this consultation's data key has been destroyed")
        self._record("staff_join", actor, c, invitation=invitation.id)
        return join_url(base_url, token.text)

    async def calendar(
        self, actor: Actor, consultation_id: str, summary: str, description: str, url: str
    ) -> tuple[Appointment, str]:
        c = await self.clinic.consultations.get(actor, consultation_id)
        appointment = await self._appointment(c)
        self._record("calendar_downloaded", actor, c, appointment=appointment.id)
        return appointment, appointment_ics(
            appointment, summary=summary, description=description, url=url, now=self.clock()
        )

    # ------------------------------------------------------------ attachments

    async def attach(
        self, actor: Actor, consultation_id: str, files: Sequence[FilePart]
    ) -> list[Attachment]:
        c = await self.clinic.attachments.require_uploader(actor, consultation_id)
        if not files:
            raise InvalidInput("choose a file", code="no_file")
        prepared = [(part.filename, *await self.files.prepare(part.data)) for part in files]
        stored = [await self._store(actor, c, *item) for item in prepared]
        self._changed(c)
        return stored

    async def _store(
        self, actor: Actor, c: Consultation, name: str, media_type: MediaType, data: bytes
    ) -> Attachment:
        attachment_id = new_attachment_id()
        sha256 = await self.files.save(c.id, attachment_id, data)
        try:
            attachment = await self.clinic.attachments.add(
                actor,
                c.id,
                attachment_id=attachment_id,
                media_type=media_type,
                size=len(data),
                sha256=sha256,
                name=name,
                now=self.clock(),
            )
        except BaseException:
            await self.files.discard(c.id, attachment_id)
            raise
        self._record(
            "attachment_added",
            actor,
            c,
            attachment=attachment.id,
            media_type=media_type.value,
            size=len(data),
        )
        return attachment

    async def download(
        self, actor: Actor, attachment_id: str
    ) -> tuple[Attachment, bytes, ClinicalText]:
        attachment = await self.clinic.attachments.get(actor, attachment_id)
        c = await self.clinic.consultations.get(actor, attachment.consultation_id)
        data = await self.files.load(c.id, attachment.id, attachment.sha256)
        self._record("attachment_downloaded", actor, c, attachment=attachment.id)
        return attachment, data, await self.clinic.attachments.name(attachment)

    # ------------------------------------------------------------ opinions

    async def file_opinion(
        self,
        member: StaffMember,
        consultation_id: str,
        fields: OpinionFields,
        supersedes: str | None,
    ) -> Opinion:
        opinion = await self.clinic.opinions.file(
            member, consultation_id, fields, supersedes=supersedes, now=self.clock()
        )
        c = await self.clinic.consultations.get(member.actor, consultation_id)
        self._record(
            "opinion_filed",
            member.actor,
            c,
            opinion=opinion.id,
            version=opinion.version,
            key=opinion.key_id,
        )
        self.events.publish(
            ev.OpinionFiled(
                consultation=c.id, opinion=opinion.id, version=opinion.version, author=member.id
            )
        )
        self._changed(c)
        return opinion

    async def acknowledge(self, actor: Actor, opinion_id: str) -> Opinion:
        opinion = await self.clinic.opinions.acknowledge(actor, opinion_id, now=self.clock())
        c = await self.clinic.consultations.get(actor, opinion.consultation_id)
        self._record("opinion_acknowledged", actor, c, opinion=opinion.id, version=opinion.version)
        self._changed(c)
        return opinion


CLINIC: web.AppKey[ClinicService] = web.AppKey("clinic", ClinicService)
