"""Join links for a consultation's invitations: minted for the appointment's window, shown as
a URL, a QR code and a printable page.

A link is valid from 15 minutes before the appointment to its end plus a grace period
(rooms/records/scheduling.py): nbf and exp of an ordinary join token (signaling/tokens.py),
so the join page and the signaling server need nothing new to enforce it. Staff join as
``staff-<staff id>`` with the call role of their staff role and their display name.
"""

from __future__ import annotations

from datetime import datetime

import cv2
import numpy as np

from rooms.records.consultations import Consultation
from rooms.records.invitations import NewLink
from rooms.records.scheduling import Appointment, link_validity
from rooms.roles import Role
from signaling import tokens

# Pixels per QR module. The page shows the image at its own size, so every module is the
# same whole number of pixels on a screen (a browser scaling it to a fixed size makes them
# uneven, which detectors stumble on); print scales it to 6 cm.
_QR_SCALE = 5
# The white margin the QR standard asks for, in modules.
_QUIET_ZONE = 4


def staff_identity(staff_id: str) -> str:
    return f"staff-{staff_id}"


def mint_link(
    secret: bytes,
    c: Consultation,
    appointment: Appointment,
    *,
    role: Role,
    identity: str,
    name: str,
    now: datetime,
) -> NewLink:
    """A join token for ``appointment``'s window (from now on if it has opened)."""
    valid = link_validity(appointment.window, now)
    token = tokens.mint(
        secret,
        consultation_id=c.id,
        kind=c.kind,
        identity=identity,
        name=name,
        role=role,
        ttl_s=int((valid.closes_at - valid.opens_at).total_seconds()),
        now=now.timestamp(),
        not_before=valid.opens_at.timestamp(),
    )
    grant = tokens.verify(secret, token, check_times=False)
    assert grant.token_id is not None
    return NewLink(
        jti=grant.token_id,
        role=role,
        identity=identity,
        name=name,
        token=token,
        valid_from=valid.opens_at,
        valid_until=valid.closes_at,
        sequence=appointment.sequence,
    )


def join_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/join/{token}"


def qr_png(text: str) -> bytes:
    """The QR code of ``text`` as a PNG (OpenCV's QRCodeEncoder; CPU: call it in a thread)."""
    modules = cv2.QRCodeEncoder.create().encode(text)
    if modules is None or modules.size == 0:
        raise ValueError("the text does not fit in a QR code")
    modules = cv2.copyMakeBorder(
        modules,
        _QUIET_ZONE,
        _QUIET_ZONE,
        _QUIET_ZONE,
        _QUIET_ZONE,
        cv2.BORDER_CONSTANT,
        value=255,
    )
    size = (modules.shape[1] * _QR_SCALE, modules.shape[0] * _QR_SCALE)
    image = cv2.resize(np.ascontiguousarray(modules), size, interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("the QR code could not be encoded")
    return png.tobytes()
