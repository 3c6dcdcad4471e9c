"""The clinical repositories over one records database and one ClinicalCipher, built the same
way by the server and the command line: consultations, requests, invitations, attachments,
opinions, the call quality kept with a consultation, and a ward round's agenda of beds."""

from __future__ import annotations

from dataclasses import dataclass

from rooms.records.attachments import Attachments
from rooms.records.clinical import ClinicalCipher
from rooms.records.consultations import Consultations
from rooms.records.database import Database
from rooms.records.frontdesk import FrontDesk
from rooms.records.invitations import Invitations
from rooms.records.opinions import Opinions
from rooms.records.quality import CallQuality
from rooms.records.requests import Requests
from rooms.records.ward import WardBeds


@dataclass(frozen=True)
class Clinic:
    consultations: Consultations
    requests: Requests
    invitations: Invitations
    attachments: Attachments
    opinions: Opinions
    quality: CallQuality
    ward: WardBeds

    @classmethod
    def build(cls, database: Database, desk: FrontDesk, cipher: ClinicalCipher) -> Clinic:
        consultations = Consultations(database, desk.sites, desk.staff, cipher)
        return cls(
            consultations=consultations,
            requests=Requests(database, desk.sites, consultations, cipher),
            invitations=Invitations(database, consultations, cipher),
            attachments=Attachments(database, consultations, cipher),
            opinions=Opinions(database, consultations, desk.staff, cipher),
            quality=CallQuality(database),
            ward=WardBeds(database, cipher),
        )
