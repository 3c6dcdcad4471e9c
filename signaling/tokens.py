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
_REQUIRED = ("iss", "aud", "sub", "name", "consultation", "kind", "role", "iat", "nbf", "exp")


class TokenError(Exception):
    """Base of every token refusal. ``code`` is the signaling protocol's error code.

    Messages are fixed strings: they never contain the token, the name or any claim value.
    """

    code: str = "invalid_token"


class InvalidToken(TokenError):
    code = "invalid_token"


class NotYetValidToken(InvalidToken):
    """``nbf`` (or ``iat``) is in the future beyond the leeway: usually a skewed clock."""


class ExpiredToken(TokenError):
    code = "expired_token"


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


def new_identity() -> str:
    """An opaque identity for someone the hospital system did not give one to."""
    return "u-" + secrets.token_hex(8)


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
) -> str:
    """Sign a join token. Raises ValueError (InvalidConsultationId included) on bad input."""
    _check_secret(secret)
    validate_consultation_id(consultation_id)
    kind = ConsultationKind(kind)
    role = Role(role)
    if not _valid_identity(identity):
        raise ValueError(f"identity must be a non-empty string of at most {MAX_IDENTITY_CHARS}")
    if not _valid_name(name):
        raise ValueError(f"name must be a string of at most {MAX_NAME_CHARS} characters")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": identity,
        "name": name,
        "consultation": consultation_id,
        "kind": kind.value,
        "role": role.value,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: bytes, token: str, *, now: float | None = None, leeway_s: int = 10) -> Grant:
    """Check signature, issuer, audience, times and every claim; return the Grant."""
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
    if current >= exp + leeway_s:
        raise ExpiredToken("token has expired")
    if current < nbf - leeway_s or current < iat - leeway_s:
        raise NotYetValidToken("token is not valid yet (check the clocks)")

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
    return Grant(
        consultation_id=consultation_id,
        kind=kind,
        identity=identity,
        name=name,
        role=role,
        expires_at=int(exp),
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
