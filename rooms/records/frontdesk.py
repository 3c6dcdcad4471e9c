"""The front desk's repositories over one records database, built the same way by the
server and the command line."""

from __future__ import annotations

from dataclasses import dataclass

from rooms.records.api_tokens import ApiTokens
from rooms.records.database import Database
from rooms.records.login import Authenticator
from rooms.records.login_throttle import LoginThrottle
from rooms.records.passwords import Passwords
from rooms.records.signing_keys import StaffKeyring, wrapping_key
from rooms.records.sites import Sites
from rooms.records.staff import Staff
from rooms.records.terminals import Terminals, pairing_key


@dataclass(frozen=True)
class FrontDesk:
    sites: Sites
    staff: Staff
    api_tokens: ApiTokens
    throttle: LoginThrottle
    authenticator: Authenticator
    terminals: Terminals

    @classmethod
    def build(
        cls,
        database: Database,
        master_key: bytes,
        *,
        passwords: Passwords | None = None,
        throttle: LoginThrottle | None = None,
    ) -> FrontDesk:
        sites = Sites(database)
        staff = Staff(database, passwords or Passwords(), StaffKeyring(wrapping_key(master_key)))
        throttle = throttle or LoginThrottle(database)
        return cls(
            sites=sites,
            staff=staff,
            api_tokens=ApiTokens(database, sites),
            throttle=throttle,
            authenticator=Authenticator(staff, throttle),
            terminals=Terminals(database, sites, pairing_key(master_key)),
        )
