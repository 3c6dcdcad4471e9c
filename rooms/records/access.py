"""Who may change what at the front desk: one place, used by every repository.

An ``Actor`` is whoever asks: a logged-in staff member, the operator at a shell
(``teleconsult sites|staff ...``, who can already read the database and so acts as a
platform admin), or a hospital system with its site's API token. A platform admin creates
sites and acts as admin of any site; a site admin manages their own site; nobody else
manages anything. Clinical records (requests, consultations, opinions) are for clinical
staff (doctors, nurses, experts) and their site's system only: administrators manage
accounts and see no patients.
"""

from __future__ import annotations

from dataclasses import dataclass

from rooms.records.errors import Forbidden
from rooms.roles import StaffRole

# Actor ids are stored in *_by columns (32 characters).
_MAX_ACTOR_ID = 32


@dataclass(frozen=True)
class Actor:
    # A staff id, or "cli:<user>" for the command line.
    id: str
    site_id: str | None
    role: StaffRole | None
    platform_admin: bool
    # A hospital system acting for its site with an API token: no person, so it joins no
    # call and signs nothing; ``id`` is the token's id.
    system: bool = False

    @classmethod
    def command_line(cls, user: str) -> Actor:
        return cls(id=f"cli:{user}"[:_MAX_ACTOR_ID], site_id=None, role=None, platform_admin=True)

    @classmethod
    def site_system(cls, token_id: str, site_id: str) -> Actor:
        return cls(id=token_id, site_id=site_id, role=None, platform_admin=False, system=True)

    @property
    def clinical(self) -> bool:
        """A doctor, nurse or expert: someone who takes part in care."""
        return self.role in (StaffRole.doctor, StaffRole.nurse, StaffRole.expert)

    def has_role(self, *roles: StaffRole) -> bool:
        return self.role in roles

    def is_admin_of(self, site_id: str | None) -> bool:
        if self.platform_admin:
            return True
        return site_id is not None and self.role is StaffRole.admin and self.site_id == site_id

    def require_admin_of(self, site_id: str | None) -> None:
        if not self.is_admin_of(site_id):
            raise Forbidden("only an admin of this site may do this")

    def require_platform_admin(self) -> None:
        if not self.platform_admin:
            raise Forbidden("only a platform admin may do this")
