"""Each staff member's Ed25519 key pair: made at account creation, private half sealed.

Opinions (rooms/records/opinions.py) are signed with it, so a signature shows which account
wrote what.
The public key is stored as is (32 raw bytes). The private key is sealed with AES-256-GCM
under a key derived (HKDF-SHA256) from the master key, with the staff id as associated data:
a sealed key copied onto another account's row does not open. Sealed layout:
``version 1 | nonce 12 | ciphertext of the 32-byte raw private key + tag 16`` (61 bytes).
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rooms.records.errors import RecordError

_VERSION = 1
_NONCE = 12
_INFO = b"teleconsult staff signing keys v1"
_RAW = serialization.Encoding.Raw


class KeyUnavailable(RecordError):
    """A sealed private key does not open (another master key, another account, damage)."""


def wrapping_key(master_key: bytes) -> bytes:
    """The AES-256 key that seals staff private keys, derived from the master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master_key)


def _aad(staff_id: str) -> bytes:
    return b"staff:" + staff_id.encode("ascii")


class StaffKeyring:
    def __init__(self, wrap_key: bytes) -> None:
        if len(wrap_key) != 32:
            raise ValueError("the wrapping key is 32 bytes")
        self._aead = AESGCM(wrap_key)

    def new_pair(self, staff_id: str) -> tuple[bytes, bytes]:
        """(public key raw, sealed private key) for a new account."""
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())  # fmt: skip
        nonce = os.urandom(_NONCE)
        sealed = bytes([_VERSION]) + nonce + self._aead.encrypt(nonce, raw, _aad(staff_id))
        return private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw), sealed

    def private_key(self, staff_id: str, sealed: bytes) -> Ed25519PrivateKey:
        if len(sealed) < 1 + _NONCE or sealed[0] != _VERSION:
            raise KeyUnavailable("not a sealed signing key of this version")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            raw = self._aead.decrypt(nonce, body, _aad(staff_id))
        except InvalidTag:
            raise KeyUnavailable("the signing key does not open with this master key") from None
        return Ed25519PrivateKey.from_private_bytes(raw)

    def sign(self, staff_id: str, sealed: bytes, message: bytes) -> bytes:
        return self.private_key(staff_id, sealed).sign(message)


def key_id(public_key: bytes) -> str:
    """A public key's short name, stored with what it signed: SHA-256, 16 bytes, hex."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the holder of ``public_key``'s over exactly ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
