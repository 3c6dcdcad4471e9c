"""The front desk in the web app: its parts, built once, and ``setup_frontdesk`` to wire them.

``FrontDeskService`` holds the records repositories (rooms/records/frontdesk.py), staff
sessions, the console change notices and the audit log; login (signaling/console/login.py) and
the consoles (signaling/console/admin.py) reach it through ``appkeys.FRONTDESK``. The clinical
part (``ClinicService``, signaling/console/clinic.py: requests, scheduling, invitations,
attachments, opinions) is built on it by ``setup_clinic``, with its pages and JSON API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from recordings.crypto import load_or_create_master_key
from recordings.store import RecordingStore
from rooms.records.clinic import Clinic
from rooms.records.database import Database
from rooms.records.frontdesk import FrontDesk
from rooms.records.staff import StaffMember
from rooms.roles import StaffRole
from signaling.audit.log import AuditLog
from signaling.config import ServerConfig
from signaling.console.attachments import AttachmentFiles
from signaling.console.cipher import KeystoreCipher
from signaling.console.clinic import CLINIC, ClinicService
from signaling.console.events import Change, ConsoleEvents, InMemoryConsoleEvents
from signaling.console.forms import upload_middleware
from signaling.console.sessions import StaffSessions
from signaling.http import appkeys


@dataclass
class FrontDeskService:
    desk: FrontDesk
    sessions: StaffSessions
    events: ConsoleEvents
    audit: AuditLog

    def record(self, action: str, actor: StaffMember | None, **fields: Any) -> None:
        """Audit a front-desk action: opaque ids only (``by`` is a staff id)."""
        self.audit.record(action, by=actor.id if actor else None, **fields)

    def changed(self, topic: str, *site_ids: str | None) -> None:
        self.events.publish(Change(topic, frozenset(s for s in site_ids if s)))


# Notices about consultations go to the clinical consoles of their sites, never to admins
# (who see no patients); the others to the sites' admins and platform admins, and
# partnerships also to clinical consoles (the departments a doctor may ask change).
CLINICAL_TOPICS = frozenset({"consultations"})


def may_see(member: StaffMember, change: Change) -> bool:
    """Which consoles a change notice goes to."""
    admin = member.platform_admin or member.role is StaffRole.admin
    ours = member.site_id is not None and member.site_id in change.site_ids
    if change.topic in CLINICAL_TOPICS:
        return not admin and ours
    if admin:
        return member.platform_admin or ours
    # The home's doctors and nurses see its terminals come and go, as its admins do.
    return change.topic in ("partnerships", "terminals") and ours


def setup_frontdesk(
    app: web.Application, config: ServerConfig, database: Database, audit: AuditLog
) -> FrontDeskService:
    from signaling.console import admin as console_admin
    from signaling.console import login as login_pages

    master_key = load_or_create_master_key(config.data_dir)
    desk = FrontDesk.build(database, master_key)
    sessions = StaffSessions(desk.staff)
    service = FrontDeskService(desk, sessions, InMemoryConsoleEvents(), audit)
    app[appkeys.FRONTDESK] = service
    secure = config.tls_cert is not None or (config.public_url or "").startswith("https:")
    app.middlewares.extend(sessions.middlewares(master_key, secure=secure))
    login_pages.setup(app)
    console_admin.setup(app)
    setup_clinic(app, config, database, service, master_key)
    app.on_shutdown.append(_close_events)
    return service


def setup_clinic(
    app: web.Application,
    config: ServerConfig,
    database: Database,
    frontdesk: FrontDeskService,
    master_key: bytes,
) -> ClinicService:
    """The clinical consoles and their JSON API, on the recordings' keys."""
    from signaling.console import api as clinic_api
    from signaling.console import desk_actions, desk_pages

    store = RecordingStore(config.data_dir, master_key)
    clinic = Clinic.build(database, frontdesk.desk, KeystoreCipher(store.keystore))
    service = ClinicService(
        frontdesk=frontdesk,
        clinic=clinic,
        files=AttachmentFiles(store),
        revocation=app[appkeys.REVOCATION],
        events=app[appkeys.EVENTS],
        secret=config.secret,
        public_url=config.public_url,
    )
    app[CLINIC] = service
    # Before the connection guard's: the upload forms take larger bodies (forms.py).
    app.middlewares.insert(0, upload_middleware(frontdesk.sessions))
    desk_pages.setup(app)
    desk_actions.setup(app)
    clinic_api.setup(app)
    return service


async def _close_events(app: web.Application) -> None:
    # Open event streams end now, not at the shutdown timeout.
    await app[appkeys.FRONTDESK].events.close()
