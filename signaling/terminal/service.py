"""What the server does around the terminal records: pairing, revoking, calling, answering.

Every action is audited with opaque ids only (a terminal's label, e.g. "Room 203", may name
where a resident lives: it is shown in the consoles, never audited or logged), and publishes
a ``terminals`` change notice to the home's consoles.

Calling (who and into what, decided once here): a terminal belongs to its nursing home, so
the home's own doctors and nurses call it, into a consultation the home runs (one they care
for, ``cares_for``) or, for a doctor, a new one started on the spot. A partner hospital's
expert reaches the resident by taking part in the home's consultation, as in any other.
The terminal gets a join token of its own: role patient, pre-admitted (the caller is
waiting for it), its identity ``terminal-<id>``, its label as name, valid for the
consultation's appointment. Revoking the terminal revokes that identity in every
consultation it was called into and not yet over, which ends a live call at once
(signaling/room/revocation.py) and refuses the token from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rooms.consultation import ConsultationKind
from rooms.records.consultations import cares_for
from rooms.records.errors import InvalidInput, NotFound
from rooms.records.revocations import Scope
from rooms.records.scheduling import link_validity
from rooms.records.staff import StaffMember
from rooms.records.terminals import Collected, Pairing, Terminal, Terminals
from rooms.roles import Role, StaffRole
from signaling import tokens
from signaling.console.clinic import ClinicService
from signaling.terminal.hub import RING_S, TerminalHub

log = logging.getLogger(__name__)

TOPIC = "terminals"
# A call started from the terminal list, without a consultation of the home's to call into.
NEW_CALL_MINUTES = 30
# A terminal whose stream has been quiet this long (three heartbeats) is shown offline.
ONLINE_WITHIN = timedelta(seconds=45)
# After an answer, when the consoles are told to look again (the terminal joins meanwhile).
_IN_CALL_NOTICES_S = (3.0, 8.0)


@dataclass
class TerminalService:
    clinic: ClinicService
    hub: TerminalHub = field(default_factory=TerminalHub)
    # Whether an identity has a session in a consultation on this node (Rooms.members_of):
    # a terminal in a call has closed its event stream, and is shown "in a call", not offline.
    in_room: Callable[[str, str], bool] | None = None

    @property
    def records(self) -> Terminals:
        return self.clinic.frontdesk.desk.terminals

    def _record(self, action: str, by: str | None, terminal: Terminal, **fields: Any) -> None:
        self.clinic.frontdesk.audit.record(
            action, by=by, site=terminal.site_id, terminal=terminal.id, **fields
        )

    def _changed(self, terminal: Terminal) -> None:
        self.clinic.frontdesk.changed(TOPIC, terminal.site_id)

    async def in_call(self, terminal: Terminal) -> bool:
        if self.in_room is None or not terminal.active:
            return False
        return any(
            self.in_room(call.consultation_id, terminal.identity)
            for call in await self.records.live_calls(terminal.id)
        )

    def online(self, terminal: Terminal, now: datetime) -> bool:
        """Connected to this node, or heard from recently by another one."""
        if self.hub.online(terminal.id):
            return True
        seen, gone = terminal.last_seen_at, terminal.disconnected_at
        if not terminal.active or seen is None or now - seen >= ONLINE_WITHIN:
            return False
        return gone is None or seen > gone

    # ------------------------------------------------------------ pairing

    async def start_pairing(self) -> Pairing:
        pairing = await self.records.start_pairing()
        self.clinic.frontdesk.audit.record("terminal_pairing_started", pairing=pairing.id)
        return pairing

    async def pair(
        self, member: StaffMember, site_id: str, code: str, label: str, auto_answer: str | int
    ) -> Terminal:
        try:
            terminal = await self.records.pair(
                member.actor, site_id, code, label, auto_answer_s=int(auto_answer or 0)
            )
        except InvalidInput as exc:
            if exc.code in ("wrong_code", "expired_code"):
                self.clinic.frontdesk.audit.record(
                    "terminal_pairing_refused", by=member.id, site=site_id, reason=exc.code
                )
            raise
        except ValueError:
            raise InvalidInput("auto_answer is a number of seconds") from None
        self._record("terminal_paired", member.id, terminal, auto_answer=terminal.auto_answer_s)
        self._changed(terminal)
        return terminal

    async def collect(self, ticket: str) -> Collected:
        collected = await self.records.collect(ticket)
        if collected.terminal is not None:
            self._record("terminal_credential_issued", None, collected.terminal)
            self._changed(collected.terminal)
        return collected

    # ------------------------------------------------------------ managing

    async def set_auto_answer(self, member: StaffMember, terminal_id: str, seconds: str) -> None:
        terminal = await self.records.set_auto_answer(member.actor, terminal_id, seconds)
        self._record("terminal_auto_answer", member.id, terminal, seconds=terminal.auto_answer_s)
        self._changed(terminal)
        self.hub.send(terminal.id, {"type": "settings", "autoAnswer": terminal.auto_answer_s})

    async def revoke(self, member: StaffMember, terminal_id: str) -> Terminal:
        """Revoke the credential, cut the terminal's streams, end its live calls."""
        terminal = await self.records.revoke(member.actor, terminal_id)
        self.hub.disconnect(terminal.id, {"type": "revoked"})
        ended = 0
        for call in await self.records.live_calls(terminal.id):
            await self.clinic.revocation.revoke(
                call.consultation_id,
                Scope.identity,
                terminal.identity,
                reason="terminal_revoked",
                by=member.id,
                expires_at=int(call.expires_at.timestamp()) + 60,
            )
            ended += 1
        self._record("terminal_revoked", member.id, terminal, calls=ended)
        self._changed(terminal)
        return terminal

    # ------------------------------------------------------------ the terminal's stream

    async def connected(self, terminal: Terminal) -> None:
        # Not audited: a flaky link reconnects all day. Pairing, calls and revocation are.
        await self.records.seen(terminal.id)
        self._changed(terminal)

    async def heartbeat(self, terminal: Terminal) -> bool:
        """Note the terminal alive; False once it has been revoked (by any node)."""
        fresh = await self.records.get(terminal.id)
        if not fresh.active:
            return False
        await self.records.seen(terminal.id)
        return True

    async def disconnected(self, terminal: Terminal) -> None:
        if not self.hub.online(terminal.id):
            await self.records.gone(terminal.id)
        self._changed(terminal)

    # ------------------------------------------------------------ calls

    async def call(self, member: StaffMember, terminal_id: str, consultation_id: str | None) -> str:
        """Ring the terminal from ``consultation_id`` (or a new consultation); the caller's
        own join URL (relative) to open."""
        actor = member.actor
        terminal = await self.records.require_caller(actor, terminal_id)
        consultations = self.clinic.clinic.consultations
        if consultation_id:
            c = await consultations.get(actor, consultation_id)
            if not cares_for(actor, c) or c.site_id != terminal.site_id:
                raise NotFound("no such consultation")
        else:
            if actor.role is not StaffRole.doctor:
                raise InvalidInput("a nurse calls from a consultation", code="no_consultation")
            c = await self.clinic.start_now(
                actor, ConsultationKind.one_to_one.value, NEW_CALL_MINUTES, None
            )
        if await consultations.ended(c.id):
            raise InvalidInput("this consultation has ended", code="ended")
        appointment = await consultations.appointment(c.id)
        if appointment is None:
            raise InvalidInput("this consultation has no time yet", code="not_scheduled")
        # The caller's link first: a refusal (the appointment is over) rings nothing.
        caller_url = await self.clinic.join(member, c.id, "")
        now = self.clinic.clock()
        valid = link_validity(appointment.window, now)
        token = tokens.mint(
            self.clinic.secret,
            consultation_id=c.id,
            kind=c.kind,
            identity=terminal.identity,
            name=terminal.label,
            role=Role.patient,
            ttl_s=int((valid.closes_at - valid.opens_at).total_seconds()),
            now=now.timestamp(),
            not_before=valid.opens_at.timestamp(),
            waiting_room=False,
        )
        grant = tokens.verify(self.clinic.secret, token, check_times=False)
        assert grant.token_id is not None
        call = await self.records.add_call(
            terminal, c.id, grant.token_id, member.id, valid.closes_at, now=now
        )
        rang = self.hub.ring(
            terminal.id,
            call.id,
            {
                "type": "ring",
                "call": call.id,
                "caller": {"name": member.display_name, "role": call_role_of(member)},
                "autoAnswer": terminal.auto_answer_s,
                "ringSeconds": int(RING_S),
                "join": f"/join/{token}",
            },
        )
        self._record("terminal_called", member.id, terminal, consultation=c.id, call=call.id,
                     online=rang > 0)  # fmt: skip
        self._changed(terminal)
        return caller_url

    async def answer(self, terminal: Terminal, call_id: str, *, auto: bool) -> None:
        call = await self.records.call(terminal.id, call_id)
        self.hub.stop_ringing(terminal.id, call.id)
        # Its stream closes now and it joins the call a moment later, which tells the
        # consoles nothing: tell them again once it has likely joined ("In a call").
        loop = asyncio.get_running_loop()
        for delay in _IN_CALL_NOTICES_S:
            loop.call_later(delay, self._changed, terminal)
        self._record("terminal_answered", None, terminal, consultation=call.consultation_id,
                     call=call.id, auto=auto)  # fmt: skip

    async def decline(self, terminal: Terminal, call_id: str) -> None:
        """The resident (or a carer) declines: the call's link to the terminal is withdrawn."""
        call = await self.records.call(terminal.id, call_id)
        self.hub.stop_ringing(terminal.id, call.id)
        await self.clinic.revocation.revoke(
            call.consultation_id,
            Scope.token,
            call.jti,
            reason="terminal_declined",
            by=terminal.id,
            expires_at=int(call.expires_at.timestamp()) + 60,
        )
        self._record("terminal_declined", None, terminal, consultation=call.consultation_id,
                     call=call.id)  # fmt: skip


def call_role_of(member: StaffMember) -> str:
    """The caller's role as the terminal shows it (translated on the terminal)."""
    return member.role.value if member.role is not None else "doctor"
