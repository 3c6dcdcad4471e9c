"""The ClinicalCipher of the records (rooms/records/clinical.py), on the recordings' keys.

Each consultation has one data key, wrapped by the master key (recordings/crypto.py
``Keystore``); clinical fields are sealed with AES-256-GCM under a key derived from it
(HKDF, its own label, so a field key is never a recording's file key), with the consultation
id and the field's table, column and row as associated data. Destroying the data key
(``recordings purge``) therefore shreds a consultation's records with its recordings.

Sealed layout: ``version 1 | nonce 12 | ciphertext + tag 16``. Key files are read in a
thread (never on the event loop), and their presence is checked on every use, so a purge
by another process takes effect at once.
"""

from __future__ import annotations

import asyncio
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recordings.crypto import Keystore
from recordings.errors import KeyDestroyedError, RecordingError
from rooms.records.clinical import Shredded, Unreadable

_VERSION = 1
_NONCE = 12
_INFO = b"teleconsult clinical fields v1"


def _aad(consultation_id: str, context: str) -> bytes:
    return b"teleconsult clinical v1|" + consultation_id.encode() + b"|" + context.encode()


class KeystoreCipher:
    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore

    async def create_key(self, consultation_id: str) -> None:
        await asyncio.to_thread(self._keystore.get_or_create, consultation_id)

    async def seal(self, consultation_id: str, plaintext: bytes, context: str) -> bytes:
        aead = await self._aead(consultation_id)
        nonce = os.urandom(_NONCE)
        return (
            bytes([_VERSION])
            + nonce
            + aead.encrypt(nonce, plaintext, _aad(consultation_id, context))
        )

    async def open(self, consultation_id: str, sealed: bytes, context: str) -> bytes:
        aead = await self._aead(consultation_id)
        if len(sealed) < 1 + _NONCE + 16 or sealed[0] != _VERSION:
            raise Unreadable("not a sealed field of this version")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return aead.decrypt(nonce, body, _aad(consultation_id, context))
        except InvalidTag:
            raise Unreadable("a sealed field fails authentication (altered or moved)") from None

    async def _aead(self, consultation_id: str) -> AESGCM:
        data_key = await asyncio.to_thread(self._data_key, consultation_id)
        field_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            data_key
        )
        return AESGCM(field_key)

    def _data_key(self, consultation_id: str) -> bytes:
        # The file, not the keystore's cache, says whether the key still exists.
        if not self._keystore.has_key(consultation_id):
            raise Shredded("this consultation's data key has been destroyed")
        try:
            return self._keystore.data_key(consultation_id)
        except KeyDestroyedError:
            raise Shredded("this consultation's data key has been destroyed") from None
        except RecordingError as exc:
            # A wrong master key or a damaged key file: the reason names no content.
            raise Unreadable(f"the consultation's data key does not open: {exc.reason}") from None
