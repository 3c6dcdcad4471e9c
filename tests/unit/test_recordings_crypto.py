"""Encryption at rest: round trip, and each kind of damage gives its own error naming the file."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import pytest

from recordings.crypto import (
    HEADER_SIZE,
    MASTER_KEY_ENV,
    EncryptedWriter,
    Keystore,
    decrypt_to_bytes,
    iter_plaintext,
    load_or_create_master_key,
    open_decrypted,
    parse_master_key,
)
from recordings.errors import (
    FormatError,
    KeyDestroyedError,
    RecordingError,
    ReorderedError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)

CHUNK = 1000
CONSULTATION = "consult-0001"


@pytest.fixture
def keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keystore:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    return Keystore(tmp_path / "keys", load_or_create_master_key(tmp_path))


@pytest.fixture
def key(keystore: Keystore) -> bytes:
    return keystore.get_or_create(CONSULTATION)


def _write(path: Path, key: bytes, data: bytes, *, close: bool = True) -> EncryptedWriter:
    w = EncryptedWriter.create(path, key, chunk_size=CHUNK)
    w.write(data)
    if close:
        w.close()
    return w


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, total length incl. the 4-byte prefix) of each record."""
    raw = path.read_bytes()
    out, pos = [], HEADER_SIZE
    while pos < len(raw):
        (n,) = struct.unpack(">I", raw[pos : pos + 4])
        out.append((pos, 4 + n))
        pos += 4 + n
    return out


DATA = os.urandom(CHUNK * 5 + 123)


def test_round_trip_and_streaming(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    w = EncryptedWriter.create(path, key, chunk_size=CHUNK)
    # Odd write sizes and a checkpoint in the middle: chunking must not change the content.
    for i in range(0, len(DATA), 777):
        w.write(DATA[i : i + 777])
        if i == 777 * 2:
            w.checkpoint()
    w.close()
    assert w.complete
    assert decrypt_to_bytes(path, key) == DATA
    chunks = list(iter_plaintext(path, key))
    assert b"".join(chunks) == DATA
    assert max(len(c) for c in chunks) <= CHUNK
    reader = open_decrypted(path, key)
    reader.seek(CHUNK * 2 + 10)
    assert reader.read(CHUNK + 5) == DATA[CHUNK * 2 + 10 : CHUNK * 3 + 15]
    reader.seek(-5, os.SEEK_END)
    assert reader.read() == DATA[-5:]


def test_empty_file_round_trips(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "empty.enc"
    _write(path, key, b"")
    assert decrypt_to_bytes(path, key) == b""


def test_ciphertext_is_not_plaintext_and_files_are_private(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    data = b"\x1a\x45\xdf\xa3" + b"patient says hello " * 500
    _write(path, key, data)
    raw = path.read_bytes()
    assert b"\x1a\x45\xdf\xa3" not in raw
    assert b"patient says" not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_flipped_byte_is_tampered_naming_file(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    raw = bytearray(path.read_bytes())
    offset, length = _records(path)[2]
    raw[offset + length // 2] ^= 0x01
    path.write_bytes(raw)
    with pytest.raises(TamperedError) as e:
        decrypt_to_bytes(path, key)
    assert not isinstance(e.value, ReorderedError)
    assert str(path) in str(e.value) and "chunk 2" in str(e.value)
    with pytest.raises(TamperedError):
        open_decrypted(path, key).read()


def test_flipped_header_byte_is_tampered(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0x80  # inside the file id
    path.write_bytes(raw)
    with pytest.raises(TamperedError, match="header"):
        decrypt_to_bytes(path, key)


def test_reordered_chunks(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    raw = path.read_bytes()
    recs = _records(path)
    (a, la), (b, lb) = recs[1], recs[2]
    swapped = raw[:a] + raw[b : b + lb] + raw[a : a + la] + raw[b + lb :]
    path.write_bytes(swapped)
    with pytest.raises(ReorderedError) as e:
        decrypt_to_bytes(path, key)
    assert str(path) in str(e.value) and "reordered" in str(e.value)


def test_dropped_middle_chunk_is_detected(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    raw = path.read_bytes()
    a, la = _records(path)[1]
    path.write_bytes(raw[:a] + raw[a + la :])
    with pytest.raises(ReorderedError):
        decrypt_to_bytes(path, key)


def test_truncated_at_chunk_boundary(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    recs = _records(path)
    offset, _ = recs[-1]  # drop the final chunk exactly
    path.write_bytes(path.read_bytes()[:offset])
    got = bytearray()
    with pytest.raises(TruncatedError) as e:
        for chunk in iter_plaintext(path, key):
            got += chunk
    assert str(path) in str(e.value)
    # Everything before the missing final chunk was yielded, authenticated.
    assert bytes(got) == DATA[: len(got)] and len(got) == CHUNK * 5
    assert e.value.readable_bytes == CHUNK * 5
    with pytest.raises(TruncatedError):
        open_decrypted(path, key)
    reader = open_decrypted(path, key, allow_truncated=True)
    assert reader.truncated and reader.read() == DATA[: CHUNK * 5]


def test_truncated_mid_chunk(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    offset, length = _records(path)[3]
    path.write_bytes(path.read_bytes()[: offset + length // 2])
    with pytest.raises(TruncatedError, match="incomplete"):
        decrypt_to_bytes(path, key)
    assert decrypt_to_bytes(path, key, allow_truncated=True) == DATA[: CHUNK * 3]


def test_unclosed_writer_is_truncated_but_readable(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"
    w = _write(path, key, DATA[: CHUNK * 2 + 10], close=False)
    w.checkpoint()
    # No close(): as after kill -9. The checkpointed tail is readable too.
    with pytest.raises(TruncatedError):
        decrypt_to_bytes(path, key)
    assert decrypt_to_bytes(path, key, allow_truncated=True) == DATA[: CHUNK * 2 + 10]


def test_wrong_data_key(tmp_path: Path, key: bytes, keystore: Keystore) -> None:
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    other = keystore.get_or_create("consult-0002")
    with pytest.raises(WrongKeyError) as e:
        decrypt_to_bytes(path, other)
    assert str(path) in str(e.value)


def test_wrong_master_key_names_key_file(tmp_path: Path, key: bytes) -> None:
    wrong = Keystore(tmp_path / "keys", os.urandom(32))
    with pytest.raises(WrongKeyError) as e:
        wrong.data_key(CONSULTATION)
    assert f"{CONSULTATION}.key" in str(e.value) and "master key" in str(e.value)


def test_swapped_key_file_is_tampered(tmp_path: Path, keystore: Keystore) -> None:
    keystore.get_or_create(CONSULTATION)
    keystore.get_or_create("consult-0002")
    keys = tmp_path / "keys"
    (keys / "consult-0002.key").write_bytes((keys / f"{CONSULTATION}.key").read_bytes())
    fresh = Keystore(keys, load_or_create_master_key(tmp_path))
    with pytest.raises(TamperedError, match=r"consult-0002\.key"):
        fresh.data_key("consult-0002")


def test_not_an_encrypted_file(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "plain.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + b"\0" * 100)
    with pytest.raises(FormatError, match=r"plain\.webm"):
        decrypt_to_bytes(path, key)


def test_destroy_key_makes_files_unreadable(tmp_path: Path, keystore: Keystore) -> None:
    key = keystore.get_or_create(CONSULTATION)
    path = tmp_path / "f.enc"
    _write(path, key, DATA)
    key_file = keystore.path(CONSULTATION)
    assert keystore.destroy_key(CONSULTATION)
    assert not key_file.exists()
    fresh = Keystore(tmp_path / "keys", load_or_create_master_key(tmp_path))
    with pytest.raises(KeyDestroyedError):
        fresh.data_key(CONSULTATION)
    assert not keystore.destroy_key(CONSULTATION)


def test_master_key_file_created_private_and_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    first = load_or_create_master_key(tmp_path / "data")
    path = tmp_path / "data" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_master_key(tmp_path / "data") == first and len(first) == 32
    path.chmod(0o644)
    with pytest.raises(WrongKeyError, match="chmod 600"):
        load_or_create_master_key(tmp_path / "data")


def test_master_key_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = os.urandom(32)
    monkeypatch.setenv(MASTER_KEY_ENV, raw.hex())
    assert load_or_create_master_key(tmp_path) == raw
    assert not (tmp_path / "master.key").exists()
    import base64

    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(raw).decode())
    assert load_or_create_master_key(tmp_path) == raw
    with pytest.raises(WrongKeyError) as e:
        parse_master_key("0123secret", "$X")
    assert "0123secret" not in str(e.value)


def test_errors_share_a_base_class() -> None:
    for cls in (TamperedError, TruncatedError, WrongKeyError, ReorderedError, FormatError):
        assert issubclass(cls, RecordingError)


def test_disk_full_keeps_complete_chunks(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "f.enc"

    class FullDisk:
        """A raw file that runs out of space after ``room`` bytes, like ENOSPC."""

        def __init__(self, room: int) -> None:
            self.f = open(path, "wb", buffering=0)
            self.room = room

        def write(self, b: bytes) -> int:
            if self.f.tell() + len(b) > self.room:
                self.f.write(b[: self.room - self.f.tell()])  # a partial record hits disk
                import errno

                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def truncate(self, n: int) -> int:
            return self.f.truncate(n)

        def fileno(self) -> int:
            return self.f.fileno()

        def close(self) -> None:
            self.f.close()

    w = EncryptedWriter(
        FullDisk(HEADER_SIZE + 3 * (CHUNK + 20) + 500), key, name=path, chunk_size=CHUNK
    )
    with pytest.raises(OSError):
        w.write(DATA)
    assert w.failed is not None
    w.close()
    assert not w.complete
    # Cut back to the last complete record: readable, reported truncated, not tampered.
    with pytest.raises(TruncatedError):
        decrypt_to_bytes(path, key)
    assert decrypt_to_bytes(path, key, allow_truncated=True) == DATA[: CHUNK * 3]
