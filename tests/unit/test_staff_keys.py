"""Staff signing keys (sealed under the master key, bound to the account), password hashing
rules, and the back-off policy's arithmetic."""

from __future__ import annotations

import asyncio
import secrets
import threading
from datetime import timedelta

import pytest

from rooms.records.errors import InvalidInput
from rooms.records.login_throttle import USERNAME_POLICY
from rooms.records.passwords import Busy, Passwords, validate_password
from rooms.records.signing_keys import KeyUnavailable, StaffKeyring, verify, wrapping_key

MASTER = secrets.token_bytes(32)


def test_a_signature_verifies_and_any_changed_byte_fails() -> None:
    ring = StaffKeyring(wrapping_key(MASTER))
    public, sealed = ring.new_pair("stf_0123456789abcdef")
    message = b'{"opinion":"refer to cardiology","consultation":"c-1"}'
    signature = ring.sign("stf_0123456789abcdef", sealed, message)
    assert verify(public, message, signature)
    for i in range(len(message)):
        changed = bytearray(message)
        changed[i] ^= 0x01
        assert not verify(public, bytes(changed), signature)
    for i in (0, 31, 63):
        bad = bytearray(signature)
        bad[i] ^= 0x80
        assert not verify(public, message, bytes(bad))
    assert not verify(b"short", message, signature)


def test_the_private_key_is_sealed_and_opens_only_for_its_account_and_master_key() -> None:
    ring = StaffKeyring(wrapping_key(MASTER))
    public, sealed = ring.new_pair("stf_aaaaaaaaaaaaaaaa")
    assert len(public) == 32 and len(sealed) == 61
    with pytest.raises(KeyUnavailable):  # copied onto another account's row
        ring.private_key("stf_bbbbbbbbbbbbbbbb", sealed)
    with pytest.raises(KeyUnavailable):  # another master key
        StaffKeyring(wrapping_key(secrets.token_bytes(32))).private_key(
            "stf_aaaaaaaaaaaaaaaa", sealed
        )
    damaged = bytearray(sealed)
    damaged[-1] ^= 1
    with pytest.raises(KeyUnavailable):
        ring.private_key("stf_aaaaaaaaaaaaaaaa", bytes(damaged))
    with pytest.raises(KeyUnavailable):
        ring.private_key("stf_aaaaaaaaaaaaaaaa", b"\x02" + sealed[1:])
    # The wrapping key is not the master key itself.
    assert wrapping_key(MASTER) != MASTER


async def test_passwords_hash_with_argon2id_and_verify() -> None:
    passwords = Passwords.for_tests()
    hashed = await passwords.hash("a good long password")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "a good long password")
    assert not await passwords.verify(hashed, "a good long passwore")
    assert not await passwords.verify(None, "a good long password")
    assert not await passwords.verify("not a hash", "a good long password")
    # Longer than any stored password can be: never a match, even on a matching prefix.
    assert not await passwords.verify(hashed, "a good long password" + "x" * 300)


@pytest.mark.parametrize("bad", ["short", "x" * 257, "aaaaaaaaaaaa", "abababababab"])
def test_weak_or_huge_passwords_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_password(bad)


async def test_a_login_flood_queues_and_then_is_refused_at_once() -> None:
    passwords = Passwords(time_cost=1, memory_cost_kib=8, concurrency=1, max_waiting=2)
    released = threading.Event()
    calls = 0

    def slow(*_: object) -> bool:
        nonlocal calls
        calls += 1
        released.wait(10)
        return False

    passwords._verify = slow  # type: ignore[method-assign,assignment]
    first = asyncio.create_task(passwords.verify(None, "x" * 12))
    second = asyncio.create_task(passwords.verify(None, "x" * 12))
    await asyncio.sleep(0.05)
    with pytest.raises(Busy):
        await passwords.verify(None, "x" * 12)
    assert calls == 1  # one at a time: the second waits for the first
    released.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [False, False]
    assert calls == 2  # and the refused one cost nothing


def test_back_off_doubles_after_the_free_failures_and_is_capped() -> None:
    p = USERNAME_POLICY
    assert [p.wait(n) for n in range(1, p.free_failures + 1)] == [timedelta(0)] * p.free_failures
    waits = [p.wait(p.free_failures + k).total_seconds() for k in range(1, 6)]
    assert waits == [1, 2, 4, 8, 16]
    assert p.wait(1000) == p.cap
