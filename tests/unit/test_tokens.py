from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from rooms.consultation import ConsultationKind
from rooms.roles import Role
from signaling.tokens import (
    ExpiredToken,
    Grant,
    InvalidToken,
    NotYetValidToken,
    TokenError,
    mint,
    new_identity,
    verify,
)

SECRET = b"k" * 64  # 64 so the HS512 test is refused for its alg, not its key length
NOW = 1_800_000_000.0
NAME = "Li Guilan"
CID = "cons_ABC-123"


def make(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "consultation_id": CID,
        "kind": ConsultationKind.joint,
        "identity": "u-42",
        "name": NAME,
        "role": Role.patient,
        "ttl_s": 600,
        "now": NOW,
    }
    args.update(overrides)
    return mint(SECRET, **args)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    """The documented claim set (docs/tokens.md), as a hospital system would build it."""
    base: dict[str, Any] = {
        "iss": "teleconsult",
        "aud": "teleconsult",
        "sub": "u-42",
        "name": NAME,
        "consultation": CID,
        "kind": "joint",
        "role": "patient",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def assert_refused(exc: pytest.ExceptionInfo[TokenError], token: str, code: str) -> None:
    assert exc.value.code == code
    assert token not in str(exc.value)
    assert NAME not in str(exc.value)
    # Not even the parts of the token.
    for part in token.split("."):
        if part:
            assert part not in str(exc.value)


def test_valid_token_round_trips() -> None:
    token = make()
    grant = verify(SECRET, token, now=NOW + 1)
    token_id = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert grant == Grant(
        consultation_id=CID,
        kind=ConsultationKind.joint,
        identity="u-42",
        name=NAME,
        role=Role.patient,
        expires_at=int(NOW) + 600,
        token_id=token_id,
        not_before=int(NOW),
    )
    assert isinstance(grant.role, Role) and isinstance(grant.kind, ConsultationKind)
    assert NAME not in repr(grant)


def test_claims_are_the_documented_ones() -> None:
    payload = jwt.decode(make(), options={"verify_signature": False})
    # jti: the optional claim teleconsult adds to what it mints, for revoking one link.
    token_id = payload.pop("jti")
    assert payload == claims()
    assert token_id.startswith("t-") and len(token_id) >= 16
    assert token_id != jwt.decode(make(), options={"verify_signature": False})["jti"]
    assert jwt.get_unverified_header(make())["alg"] == "HS256"


def test_expired() -> None:
    token = make()
    verify(SECRET, token, now=NOW + 600 + 9)  # inside the 10 s leeway
    with pytest.raises(ExpiredToken) as exc:
        verify(SECRET, token, now=NOW + 600 + 10)
    assert_refused(exc, token, "expired_token")


def test_not_yet_valid() -> None:
    token = make()
    verify(SECRET, token, now=NOW - 9)
    with pytest.raises(NotYetValidToken) as exc:
        verify(SECRET, token, now=NOW - 11)
    assert_refused(exc, token, "invalid_token")


def test_tampered_payload() -> None:
    header, _, signature = make().split(".")
    forged = b64(json.dumps(claims(role="doctor")).encode())
    token = f"{header}.{forged}.{signature}"
    with pytest.raises(InvalidToken) as exc:
        verify(SECRET, token, now=NOW)
    assert_refused(exc, token, "invalid_token")


def test_tampered_signature() -> None:
    header, payload, signature = make().split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    token = f"{header}.{payload}.{flipped}"
    with pytest.raises(InvalidToken) as exc:
        verify(SECRET, token, now=NOW)
    assert_refused(exc, token, "invalid_token")


def test_wrong_secret() -> None:
    token = make()
    with pytest.raises(InvalidToken) as exc:
        verify(b"x" * 32, token, now=NOW)
    assert_refused(exc, token, "invalid_token")


def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(role="doctor")).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(InvalidToken) as exc:
            verify(SECRET, token, now=NOW)
        assert_refused(exc, token, "invalid_token")


def test_other_hmac_algorithms_are_refused() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken) as exc:
        verify(SECRET, token, now=NOW)
    assert_refused(exc, token, "invalid_token")


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "admin"},
        {"role": "Doctor"},
        {"kind": "group"},
        {"consultation": "Zhang San bed 3"},
        {"consultation": "abc"},
        {"aud": "someone-else"},
        {"iss": "someone-else"},
        {"sub": ""},
        {"exp": "tomorrow"},
        {"exp": True},
    ],
)
def test_bad_claim_values(bad: dict[str, Any]) -> None:
    token = jwt.encode(claims(**bad), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken) as exc:
        verify(SECRET, token, now=NOW)
    assert_refused(exc, token, "invalid_token")


def test_infinite_expiry_is_refused() -> None:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    raw = json.dumps(claims()).replace(str(int(NOW) + 600), "Infinity")
    payload = b64(raw.encode())
    signing_input = f"{header}.{payload}".encode()
    sig = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input, SECRET
    )
    token = f"{header}.{payload}.{b64(sig)}"
    with pytest.raises(InvalidToken):
        verify(SECRET, token, now=NOW + 10**9)


@pytest.mark.parametrize(
    "claim", ["iss", "aud", "sub", "name", "consultation", "kind", "role", "iat", "nbf", "exp"]
)
def test_missing_claim(claim: str) -> None:
    token = jwt.encode(claims(**{claim: None}), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken) as exc:
        verify(SECRET, token, now=NOW)
    assert_refused(exc, token, "invalid_token")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_malformed(token: str) -> None:
    with pytest.raises(InvalidToken):
        verify(SECRET, token, now=NOW)


def test_token_minted_by_plain_pyjwt_is_accepted() -> None:
    # Exactly the example in docs/tokens.md: no teleconsult code involved in minting.
    import time

    now = int(time.time())
    token = jwt.encode(
        {"iss": "teleconsult", "aud": "teleconsult", "sub": "his-7f3a9c", "name": NAME,
         "consultation": "c-8d2f41ab", "kind": "joint", "role": "expert",
         "iat": now, "nbf": now, "exp": now + 3600},
        SECRET,
        algorithm="HS256",
    )  # fmt: skip
    grant = verify(SECRET, token)
    assert grant.identity == "his-7f3a9c"
    assert grant.role is Role.expert
    assert grant.consultation_id == "c-8d2f41ab"
    assert grant.expires_at == now + 3600


def test_mint_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        make(role="admin")
    with pytest.raises(ValueError):
        make(kind="party")
    with pytest.raises(ValueError):
        make(consultation_id="x")
    with pytest.raises(ValueError):
        make(identity="")
    with pytest.raises(ValueError):
        make(ttl_s=0)
    with pytest.raises(ValueError):
        mint(b"short", consultation_id=CID, kind="joint", identity="u", name="", role="doctor")


def test_short_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        verify(b"short", make())


def test_new_identity_is_opaque_and_unique() -> None:
    ids = {new_identity() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("u-") for i in ids)


@pytest.mark.parametrize(
    "times",
    [
        {"exp": 10**40},  # the one found: accepted before
        {"exp": int(NOW) + 8 * 24 * 3600},  # a day over the window
        {"iat": int(NOW) - 400 * 24 * 3600},  # minted over a year before its expiry
    ],
)
def test_lifetimes_are_bounded(times: dict[str, int]) -> None:
    token = jwt.encode(claims(**times), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken) as exc:
        verify(SECRET, token, now=NOW)
    assert_refused(exc, token, "invalid_token")
    assert "too long" in str(exc.value)


def test_a_week_long_token_and_one_booked_months_ahead_are_accepted() -> None:
    week = jwt.encode(claims(exp=int(NOW) + 7 * 24 * 3600), SECRET, algorithm="HS256")
    assert verify(SECRET, week, now=NOW).expires_at == int(NOW) + 7 * 24 * 3600
    later = NOW + 90 * 24 * 3600
    booked = make(not_before=later, ttl_s=3600)
    with pytest.raises(NotYetValidToken) as exc:
        verify(SECRET, booked, now=NOW)
    assert exc.value.valid_from == later
    assert verify(SECRET, booked, now=later + 60).not_before == int(later)


def test_mint_refuses_lifetimes_past_the_bounds() -> None:
    with pytest.raises(ValueError):
        make(ttl_s=8 * 24 * 3600)
    with pytest.raises(ValueError):
        make(not_before=NOW + 400 * 24 * 3600)
    with pytest.raises(ValueError):
        make(not_before=NOW - 60)


@pytest.mark.parametrize("jti", ["", 7, "x" * 65])
def test_bad_token_ids_are_refused(jti: object) -> None:
    token = jwt.encode(claims(jti=jti), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken):
        verify(SECRET, token, now=NOW)
