"""Revocation on the signaling side: refuse revoked tokens, end the sessions a revocation
concerns, on this node and on every other.

The durable record is in the records database (rooms/records/revocations.py). A revocation
made here (a host removing someone, ending the consultation) takes effect at once; one made
elsewhere (another node, ``teleconsult revoke``) is picked up by ``watch()``, which polls for
new rows every couple of seconds. Every revocation this node learns of is audited once by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rooms.records.revocations import Revocation, Revocations, Scope
from signaling.tokens import Grant, RevokedToken

if TYPE_CHECKING:
    from signaling.audit.log import AuditLog
    from signaling.room.members import Member

log = logging.getLogger(__name__)

POLL_S = 2.0
# How far back each poll looks: longer than any commit can lag behind its id on PostgreSQL.
LOOKBACK = timedelta(seconds=60)
MAX_REMEMBERED = 10_000
# What a revoked participant's page is told, by scope: a fixed code it can translate.
BYE_REASON = {
    Scope.consultation: "consultation_ended",
    Scope.identity: "removed",
    Scope.token: "removed",
}


class RevocationGuard:
    def __init__(
        self,
        revocations: Revocations,
        members_of: Callable[[str], list[Member]],
        audit: AuditLog,
        *,
        on_consultation_ended: Callable[[str], object] | None = None,
    ) -> None:
        self.revocations = revocations
        # Who is in a consultation on this node (Rooms.members_of).
        self._members_of = members_of
        self._audit = audit
        self._on_consultation_ended = on_consultation_ended
        self._task: asyncio.Task[None] | None = None
        # Ids this node has applied (bounded: oldest dropped), so each is applied once.
        self._applied_ids: dict[int, None] = {}
        # The same by target, for the join that checked the database a moment before the
        # revocation and reached its Room a moment after it.
        self._applied: dict[tuple[str, Scope, str], None] = {}

    async def check(self, grant: Grant, *, allow_ended: bool = False) -> None:
        """Raise RevokedToken if the token behind ``grant`` has been revoked.

        ``allow_ended``: the consultation's end alone does not refuse (its records stay
        reachable to those entitled); a removed person or withdrawn link still does.
        """
        found = await self.revocations.find(
            grant.consultation_id,
            grant.identity,
            grant.token_id,
            include_consultation=not allow_ended,
        )
        if found is not None:
            if found.scope is Scope.consultation:
                raise RevokedToken("this consultation has ended", ended=True)
            raise RevokedToken("this link has been revoked")

    def revoked_since_check(self, grant: Grant) -> bool:
        """Whether a revocation applied on this node concerns ``grant`` (no database)."""
        cid = grant.consultation_id
        return any(
            key in self._applied
            for key in (
                (cid, Scope.consultation, ""),
                (cid, Scope.identity, grant.identity),
                (cid, Scope.token, grant.token_id or ""),
            )
        )

    def ended(self, consultation_id: str) -> bool:
        """Whether this node has applied the end of ``consultation_id`` (no database)."""
        return (consultation_id, Scope.consultation, "") in self._applied

    async def revoke(
        self,
        consultation_id: str,
        scope: Scope,
        subject: str = "",
        *,
        reason: str,
        by: str | None,
        expires_at: int | None = None,
    ) -> Revocation:
        revocation = await self.revocations.revoke(
            consultation_id,
            scope,
            subject,
            reason=reason,
            by=by,
            expires_at=datetime.fromtimestamp(expires_at, UTC) if expires_at else None,
        )
        await self._apply(revocation)
        return revocation

    async def _apply(self, revocation: Revocation) -> None:
        if not self._remember(revocation):
            return
        self._audit.record(
            "revoked",
            consultation=revocation.consultation_id,
            scope=str(revocation.scope),
            subject=revocation.subject,
            reason=revocation.reason,
            by=revocation.revoked_by,
        )
        ended = 0
        for member in self._members_of(revocation.consultation_id):
            if _concerns(revocation, member.grant):
                member.link.end(BYE_REASON[revocation.scope])
                ended += 1
        if revocation.scope is Scope.consultation and self._on_consultation_ended is not None:
            result = self._on_consultation_ended(revocation.consultation_id)
            if asyncio.iscoroutine(result):
                await result
        log.info(
            "revocation %d (%s) of consultation %s ended %d session(s)",
            revocation.id,
            revocation.scope,
            revocation.consultation_id,
            ended,
        )

    def _remember(self, revocation: Revocation) -> bool:
        """Note ``revocation`` as applied; False if it was already."""
        if revocation.id in self._applied_ids:
            return False
        self._applied_ids[revocation.id] = None
        self._applied[(revocation.consultation_id, revocation.scope, revocation.subject)] = None
        for seen in (self._applied_ids, self._applied):
            if len(seen) > MAX_REMEMBERED:
                del seen[next(iter(seen))]
        return True

    # ------------------------------------------------------------ other nodes, the CLI

    async def start(self) -> None:
        # Revocations made before this process started concern no session of it.
        for revocation in await self.revocations.recent(LOOKBACK):
            self._remember(revocation)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                for revocation in await self.revocations.recent(LOOKBACK):
                    await self._apply(revocation)
            except Exception:
                # A database hiccup must not end the watcher: the next poll tries again.
                log.exception("polling for revocations failed")


def _concerns(revocation: Revocation, grant: Grant) -> bool:
    if revocation.scope is Scope.consultation:
        return True
    if revocation.scope is Scope.identity:
        return grant.identity == revocation.subject
    return grant.token_id == revocation.subject
