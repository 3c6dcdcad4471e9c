"""Site-scoped API tokens on the JSON API: ``Authorization: Bearer tcs_...``.

``bearer_token(request)`` is the live token the request carries (401 otherwise); endpoints
for one site call ``site_token(request, site_id)``, which is also 403 with another site's.
A bearer token is not sent by browsers on their own, so these requests need no CSRF token.
"""

from __future__ import annotations

from aiohttp import web

from rooms.records.api_tokens import ApiToken
from rooms.records.errors import Forbidden
from signaling.http import appkeys


def has_bearer(request: web.Request) -> bool:
    """Whether the request says who it is with an Authorization header (then the session
    cookie is never looked at)."""
    return "Authorization" in request.headers


async def bearer_token(request: web.Request) -> ApiToken:
    """The request's API token, checked live."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    token = None
    if scheme.lower() == "bearer" and secret:
        token = await request.app[appkeys.FRONTDESK].desk.api_tokens.check(secret.strip())
    if token is None:
        raise web.HTTPUnauthorized(
            text="a live API token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return token


async def site_token(request: web.Request, site_id: str) -> ApiToken:
    """The request's API token, checked live and for ``site_id``."""
    token = await bearer_token(request)
    try:
        token.require_site(site_id)
    except Forbidden:
        raise web.HTTPForbidden(text="this API token is for another site") from None
    return token
