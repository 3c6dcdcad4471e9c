"""Join tokens: standard HS256 JWTs, so a hospital system can mint them with any JWT library.

The claim set is documented in docs/tokens.md; keep the two in step.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from rooms.consultation import ConsultationKind, validate_consultation_id
from rooms.errors import InvalidConsultationId
from rooms.roles import Role

ISSUER = "teleconsult"
AUDIENCE = "teleconsult"
# One algorithm, hard-coded: never trust the token's own ``alg`` (RFC 8725 §2.1), and ``none``
# or an asymmetric alg confused with the HMAC secret must not get through.
ALGORITHM = "HS256"
# HS256 with less than 256 bits of key is brute-forceable offline from any leaked token.
MIN_SECRET_BYTES = 32
MAX_IDENTITY_CHARS = 256
MAX_NAME_CHARS = 200
# A join link is a password for one consultation: it must go stale. The longest window a
# token may be valid for (exp - nbf): a week covers a ward round's rota or a week of
# follow-up visits, and nothing minted by mistake lives for ever.
MAX_VALIDITY_S = 7 * 24 * 3600
# How far ahead of its minting a token may be used (exp - iat): links for appointments are
# minted when the appointment is booked, up to a year ahead.
MAX_HORIZON_S = 366 * 24 * 3600
MAX_TOKEN_ID_CHARS = 64
# Who lands in the waiting room unless the token says otherwise: people from outside the
# care team (a patient, a relative, a student). Staff of the consultation go straight in.
WAITING_ROLES = frozenset({Role.patient, Role.observer})
_REQUIRED = ("iss", "aud", "sub", "name", "consultation", "kind", "role", "iat", "nbf", "exp")


class TokenError(Exception):
    """Base of every token refusal. ``code`` is the signaling protocol's error code.

    Messages are fixed strings: they never contain the token, the name or any claim value.
    """

    code: str = "invalid_token"


class InvalidToken(TokenError):
    code = "invalid_token"


class NotYetValidToken(InvalidToken):
    """``nbf`` (or ``iat``) is in the future beyond the leeway: an early link, or a skewed
    clock. ``valid_from`` (epoch seconds) says when to come back."""

    def __init__(self, message: str, valid_from: float | None = None) -> None:
        super().__init__(message)
        self.valid_from = valid_from


class ExpiredToken(TokenError):
    code = "expired_token"


class RevokedToken(TokenError):
    """Revoked: the consultation ended (``ended``), or this person or link was removed."""

    code = "revoked_token"

    def __init__(self, message: str, *, ended: bool = False) -> None:
        super().__init__(message)
        self.ended = ended


@dataclass(frozen=True)
class Grant:
    """What a verified token allows: this identity, in this role, in this consultation."""

    consultation_id: str
    kind: ConsultationKind
    identity: str
    # Possibly a patient's real name: kept out of repr() so a logged Grant never shows it.
    name: str = field(repr=False)
    role: Role
    expires_at: int
    # The token's ``jti``, if it has one: what revokes this one link and no other.
    token_id: str | None = None
    not_before: int = 0
    # The ``waiting_room`` claim: whether this person waits to be admitted. None: by role
    # (patients and observers wait, staff do not). False pre-admits, e.g. a terminal the
    # doctor is calling.
    waiting_room: bool | None = None

    @property
    def waits(self) -> bool:
        if self.waiting_room is not None:
            return self.waiting_room
        return self.role in WAITING_ROLES


def new_identity() -> str:
    """An opaque identity for someone the hospital system did not give one to."""
    return "u-" + secrets.token_hex(8)


def new_token_id() -> str:
    return "t-" + secrets.token_urlsafe(12)


def mint(
    secret: bytes,
    *,
    consultation_id: str,
    kind: ConsultationKind | str,
    identity: str,
    name: str,
    role: Role | str,
    ttl_s: int = 3600,
    now: float | None = None,
    not_before: float | None = None,
    waiting_room: bool | None = None,
) -> str:
    """Sign a join token. Raises ValueError (InvalidConsultationId included) on bad input.

    Valid from ``not_before`` (default: now) for ``ttl_s`` seconds, at most MAX_VALIDITY_S.
    Every token carries a random ``jti``, so one link can be revoked without the others.
    """
    _check_secret(secret)
    validate_consultation_id(consultation_id)
    kind = ConsultationKind(kind)
    role = Role(role)
    if not _valid_identity(identity):
        raise ValueError(f"identity must be a non-empty string of at most {MAX_IDENTITY_CHARS}")
    if not _valid_name(name):
        raise ValueError(f"name must be a string of at most {MAX_NAME_CHARS} characters")
    if not 0 < ttl_s <= MAX_VALIDITY_S:
        raise ValueError(f"ttl_s must be positive and at most {MAX_VALIDITY_S} s")
    issued = int(time.time() if now is None else now)
    valid_from = issued if not_before is None else int(not_before)
    if not issued <= valid_from <= issued + MAX_HORIZON_S - ttl_s:
        raise ValueError("not_before must be between now and the minting horizon")
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": identity,
        "name": name,
        "consultation": consultation_id,
        "kind": kind.value,
        "role": role.value,
        "iat": issued,
        "nbf": valid_from,
        "exp": valid_from + int(ttl_s),
        "jti": new_token_id(),
    }
    if waiting_room is not None:
        claims["waiting_room"] = bool(waiting_room)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(
    secret: bytes,
    token: str,
    *,
    now: float | None = None,
    leeway_s: int = 10,
    check_times: bool = True,
) -> Grant:
    """Check signature, issuer, audience, times and every claim; return the Grant.

    ``check_times=False`` is for revoking a link: one not valid yet can be revoked too.
    """
    _check_secret(secret)
    if not isinstance(token, str) or not token:
        raise InvalidToken("token is missing")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={
                "require": list(_REQUIRED),
                "strict_aud": True,
                # Times are checked below against ``now``, which PyJWT cannot be given.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    # ``from None``: a chained PyJWT exception could end up in a logged traceback, and our
    # own message says all the client needs.
    except jwt.InvalidSignatureError:
        raise InvalidToken("token signature is invalid") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken(f"token must be signed with {ALGORITHM}") from None
    except jwt.MissingRequiredClaimError as e:
        # The claim's name is ours, not the caller's data: safe to say which one.
        raise InvalidToken(f"token lacks the {e.claim!r} claim") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("token is not meant for teleconsult (aud)") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("token was not issued for teleconsult (iss)") from None
    except jwt.PyJWTError:
        raise InvalidToken("token is malformed") from None

    current = time.time() if now is None else now
    exp, nbf, iat = (_numeric_date(claims, c) for c in ("exp", "nbf", "iat"))
    # Bounded lifetimes first: an absurd exp is a forged or careless token, not a late one.
    if exp - max(nbf, iat) > MAX_VALIDITY_S or exp - iat > MAX_HORIZON_S:
        raise InvalidToken("token is valid for too long (at most 7 days, within a year)")
    if check_times and current >= exp + leeway_s:
        raise ExpiredToken("token has expired")
    if check_times and current < iat - leeway_s:
        raise NotYetValidToken("token is not valid yet (check the clocks)")
    if check_times and current < nbf - leeway_s:
        raise NotYetValidToken("token is not valid yet", valid_from=nbf)

    identity, name = claims["sub"], claims["name"]
    if not _valid_identity(identity):
        raise InvalidToken("token has a bad 'sub' claim")
    if not _valid_name(name):
        raise InvalidToken("token has a bad 'name' claim")
    try:
        consultation_id = validate_consultation_id(claims["consultation"])
    except InvalidConsultationId:
        raise InvalidToken("token has a bad 'consultation' claim") from None
    try:
        kind = ConsultationKind(claims["kind"])
    except ValueError:
        raise InvalidToken("token has an unknown 'kind'") from None
    try:
        role = Role(claims["role"])
    except ValueError:
        raise InvalidToken("token has an unknown 'role'") from None
    token_id = claims.get("jti")
    if token_id is not None and not (
        isinstance(token_id, str) and 0 < len(token_id) <= MAX_TOKEN_ID_CHARS
    ):
        raise InvalidToken("token has a bad 'jti' claim")
    waiting_room = claims.get("waiting_room")
    if waiting_room is not None and not isinstance(waiting_room, bool):
        raise InvalidToken("token has a bad 'waiting_room' claim")
    return Grant(
        consultation_id=consultation_id,
        kind=kind,
        identity=identity,
        name=name,
        role=role,
        expires_at=int(exp),
        token_id=token_id,
        not_before=int(nbf),
        waiting_room=waiting_room,
    )


def _check_secret(secret: bytes) -> None:
    # A configuration error, not the client's fault: ValueError, never a TokenError.
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes")


def _numeric_date(claims: dict[str, Any], claim: str) -> float:
    value = claims[claim]
    # bool is an int in Python; a JSON true is no date.
    # JSON as Python parses it also admits NaN and Infinity: an ``exp`` of Infinity never ends.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"token has a bad {claim!r} claim")
    return float(value)


def _valid_identity(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_IDENTITY_CHARS


def _valid_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_CHARS
