"""Typed keys under which the aiohttp Application holds its shared parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from signaling.config import ServerConfig
    from signaling.console.frontdesk import FrontDeskService
    from signaling.events import EventStream
    from signaling.room.revocation import RevocationGuard

CONFIG: web.AppKey[ServerConfig] = web.AppKey("config")
REVOCATION: web.AppKey[RevocationGuard] = web.AppKey("revocation")
FRONTDESK: web.AppKey[FrontDeskService] = web.AppKey("frontdesk")
EVENTS: web.AppKey[EventStream] = web.AppKey("events")
