"""Typed keys under which the aiohttp Application holds its shared parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from signaling.config import ServerConfig

CONFIG: web.AppKey[ServerConfig] = web.AppKey("config")
