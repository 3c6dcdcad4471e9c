"""Encryption at rest: envelope keys and a chunked AES-256-GCM file format.

Keys
  master key (32 bytes, $TELECONSULT_MASTER_KEY or <data_dir>/master.key, 0600)
    └─ wraps one random data key per consultation (AES-256-GCM, consultation id as AAD),
       stored in ``keys/<consultation>.key``. Destroying that file crypto-shreds every
       recording of the consultation.
  data key
    └─ per file: HKDF(data key, salt=file id) gives the chunk key and a key-check value, so
       no two files ever share a (key, nonce) pair and a wrong key is told apart from damage.

File format (version 1), all integers big-endian::

    header  = magic "\\x89TCENC\\r\\n" | version u8 | flags u8 | reserved u16 | chunk size u32
              | file id 16 | key check 16 | crc32 of the preceding 48 bytes u32      (52 bytes)
    record  = ciphertext length u32 | AES-256-GCM(chunk key, nonce = 0u32 | index u64,
              plaintext, aad = header | index u64 | final u8)

Chunks hold at most ``chunk size`` plaintext bytes; the writer seals a chunk whenever one
fills, and on ``checkpoint()``, so a process killed at any moment leaves a file whose
complete chunks all decrypt. Only ``close()`` writes a chunk with the final flag, so a file
without one is reported as truncated rather than silently short. The index in the AAD makes
moved chunks fail, and the reader then looks for the index they do authenticate under to
say "reordered" rather than just "tampered".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import secrets
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recordings.errors import (
    FormatError,
    KeyDestroyedError,
    RecordingError,
    ReorderedError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)

MASTER_KEY_ENV = "TELECONSULT_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32

MAGIC = b"\x89TCENC\r\n"
VERSION = 1
_HEADER_BODY = struct.Struct(">8sBBHI16s16s")
HEADER_SIZE = _HEADER_BODY.size + 4
_LEN = struct.Struct(">I")
_TAG = 16
DEFAULT_CHUNK_SIZE = 64 * 1024
# A header claiming a bigger chunk is damaged: refusing it keeps a flipped bit in the size
# field from making the reader allocate gigabytes.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
# How far either side of a failing chunk's position to look for the index it was sealed
# under. Reordering farther than this is still caught, only reported as plain tampering.
_REORDER_WINDOW = 256


# --- master key ---------------------------------------------------------------------------


def parse_master_key(text: str, origin: str) -> bytes:
    """32 bytes from 64 hex digits or base64 (standard or URL-safe). Never echoes the value."""
    value = text.strip()
    key: bytes | None = None
    if len(value) == 2 * KEY_BYTES:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = None
    if key is None:
        try:
            padded = value + "=" * (-len(value) % 4)
            key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != KEY_BYTES:
        raise WrongKeyError(
            origin, "the master key must be 32 bytes, written as 64 hex digits or base64"
        )
    return key


def load_or_create_master_key(data_dir: Path) -> bytes:
    """The master key: $TELECONSULT_MASTER_KEY if set, else ``<data_dir>/master.key``.

    The file is created (0600, 32 random bytes as hex) on first use. A key file readable by
    group or others is refused: whoever reads it can unwrap every consultation's data key.
    """
    path = Path(data_dir) / MASTER_KEY_FILE
    if MASTER_KEY_ENV not in os.environ and not path.exists():
        create_exclusive(path, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
    return load_master_key(data_dir)


def load_master_key(data_dir: Path) -> bytes:
    """The master key as ``load_or_create_master_key`` finds it, never creating one.

    For checking tools: a key made up on the spot would only make every check fail.
    """
    from_env = os.environ.get(MASTER_KEY_ENV)
    if from_env is not None:
        return parse_master_key(from_env, f"${MASTER_KEY_ENV}")
    path = Path(data_dir) / MASTER_KEY_FILE
    if not path.exists():
        raise WrongKeyError(path, f"no master key here, and ${MASTER_KEY_ENV} is not set")
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise WrongKeyError(path, "the master key is not a regular file")
    if st.st_mode & 0o077:
        raise WrongKeyError(
            path,
            f"readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}",
        )
    return parse_master_key(path.read_text(encoding="ascii"), str(path))


def master_key_id(master_key: bytes) -> str:
    """A short public fingerprint, stored with each wrapped key to name a wrong master key."""
    return hmac.new(master_key, b"teleconsult master key id v1", hashlib.sha256).hexdigest()[:16]


def create_exclusive(path: Path, content: bytes) -> None:
    """Write ``content`` to a new 0600 file at ``path``; if another process won, keep theirs.

    Written under a temporary name and hard-linked into place, so a reader never sees a
    half-written key and two processes starting at once end up with the same key.
    """
    make_private_dir(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def make_private_dir(path: Path) -> Path:
    """``path`` and any missing parent, each created 0700 (existing ones are left alone).

    Not ``mkdir(parents=True)``: that creates the parents with the default mode (0755 under
    the usual umask), which left ``recordings/`` readable by everyone when ``keys/`` was
    made first. chmod after mkdir because mkdir's mode is filtered by the umask.
    """
    missing: list[Path] = []
    for d in (path, *path.parents):
        if d.is_dir():
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # another process made it first; its maker chose its mode
        d.chmod(0o700)
    return path


# --- data keys ----------------------------------------------------------------------------


def _wrap_aad(consultation: str) -> bytes:
    # Binding the wrapped key to its consultation: a key file copied over another
    # consultation's fails to unwrap instead of silently decrypting the wrong recordings.
    return b"teleconsult data key v1|" + consultation.encode()


class Keystore:
    """One wrapped data key per consultation, in ``<keys_dir>/<consultation>.key``."""

    def __init__(self, keys_dir: Path, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self.keys_dir = Path(keys_dir)
        self._master = AESGCM(master_key)
        self._master_id = master_key_id(master_key)
        # Unwrapped keys, so a recording's every file does not pay for the JSON and unwrap.
        self._cache: dict[str, bytes] = {}

    def path(self, consultation: str) -> Path:
        from rooms.consultation import validate_consultation_id

        # The id becomes a file name: only the safe charset may reach the filesystem.
        return self.keys_dir / f"{validate_consultation_id(consultation)}.key"

    def has_key(self, consultation: str) -> bool:
        return self.path(consultation).exists()

    def consultations(self) -> list[str]:
        if not self.keys_dir.exists():
            return []
        return sorted(p.stem for p in self.keys_dir.glob("*.key"))

    def get_or_create(self, consultation: str) -> bytes:
        path = self.path(consultation)
        if not path.exists():
            data_key = AESGCM.generate_key(bit_length=256)
            nonce = secrets.token_bytes(12)
            record = {
                "version": 1,
                "alg": "A256GCM-wrap",
                "consultation": consultation,
                "master_key_id": self._master_id,
                "created_at": time.time(),
                "nonce": base64.b64encode(nonce).decode(),
                "wrapped": base64.b64encode(
                    self._master.encrypt(nonce, data_key, _wrap_aad(consultation))
                ).decode(),
            }
            create_exclusive(path, json.dumps(record).encode())
        # Read back even when just created: another process may have won the race.
        return self.data_key(consultation)

    def data_key(self, consultation: str) -> bytes:
        """The consultation's unwrapped data key, or a clear error naming the key file."""
        cached = self._cache.get(consultation)
        if cached is not None:
            return cached
        path = self.path(consultation)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyDestroyedError(
                path, "no data key: destroyed by retention, or never created"
            ) from None
        try:
            record = json.loads(raw)
            nonce = base64.b64decode(record["nonce"])
            wrapped = base64.b64decode(record["wrapped"])
            stored_id = record["master_key_id"]
        except (ValueError, KeyError, TypeError) as e:
            raise TamperedError(path, f"the key file is damaged ({e.__class__.__name__})") from e
        if stored_id != self._master_id:
            raise WrongKeyError(
                path,
                f"the data key was wrapped by master key {stored_id}, but the configured "
                f"master key is {self._master_id}",
            )
        try:
            key = self._master.decrypt(nonce, wrapped, _wrap_aad(consultation))
        except InvalidTag:
            raise TamperedError(
                path, "the wrapped data key fails authentication (file altered or swapped)"
            ) from None
        self._cache[consultation] = key
        return key

    def destroy_key(self, consultation: str) -> bool:
        """Crypto-shred: overwrite the wrapped key, then unlink it. True if one existed.

        Overwriting is best effort (copy-on-write filesystems and SSDs may keep the old
        blocks); what makes the data unrecoverable is that no copy of the wrapped key
        outlives its retention, so backups of ``keys/`` must expire with it.
        """
        self._cache.pop(consultation, None)
        path = self.path(consultation)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            os.write(fd, secrets.token_bytes(max(size, 1)))
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        _fsync_dir(path.parent)
        return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the chunked stream -------------------------------------------------------------------


def _hkdf(data_key: bytes, file_id: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=file_id, info=info).derive(data_key)


def _nonce(index: int) -> bytes:
    return b"\0\0\0\0" + index.to_bytes(8, "big")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


class _Header:
    def __init__(self, raw: bytes, chunk_size: int, file_id: bytes, key_check: bytes) -> None:
        self.raw = raw
        self.chunk_size = chunk_size
        self.file_id = file_id
        self.key_check = key_check

    @classmethod
    def new(cls, data_key: bytes, chunk_size: int) -> _Header:
        file_id = secrets.token_bytes(16)
        check = _hkdf(data_key, file_id, b"teleconsult key check v1", 16)
        body = _HEADER_BODY.pack(MAGIC, VERSION, 0, 0, chunk_size, file_id, check)
        return cls(body + zlib.crc32(body).to_bytes(4, "big"), chunk_size, file_id, check)

    @classmethod
    def parse(cls, raw: bytes, name: Path | str) -> _Header:
        if len(raw) < HEADER_SIZE:
            if MAGIC.startswith(raw[: len(MAGIC)]):
                raise TruncatedError(name, "the file ends inside its header: nothing readable")
            raise FormatError(name, "not a teleconsult encrypted file")
        magic, version, _flags, _res, chunk_size, file_id, check = _HEADER_BODY.unpack(
            raw[: _HEADER_BODY.size]
        )
        if magic != MAGIC:
            raise FormatError(name, "not a teleconsult encrypted file (bad magic)")
        if zlib.crc32(raw[: _HEADER_BODY.size]) != int.from_bytes(raw[_HEADER_BODY.size :], "big"):
            # A checksum, not a MAC: it only tells a damaged header from a wrong key.
            # The chunks' AAD covers the header, so a forged header fails there anyway.
            raise TamperedError(name, "the header is damaged (checksum mismatch)")
        if version != VERSION:
            raise FormatError(name, f"unknown format version {version}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise TamperedError(name, f"implausible chunk size {chunk_size}")
        return cls(raw, chunk_size, file_id, check)

    def chunk_cipher(self, data_key: bytes, name: Path | str) -> AESGCM:
        expected = _hkdf(data_key, self.file_id, b"teleconsult key check v1", 16)
        if not hmac.compare_digest(expected, self.key_check):
            raise WrongKeyError(name, "encrypted with another data key (wrong consultation?)")
        return AESGCM(_hkdf(data_key, self.file_id, b"teleconsult chunk v1", 32))


class EncryptedWriter(io.RawIOBase):
    """A write-only file object that encrypts as it goes. PyAV can mux straight into it.

    Full chunks are sealed and written the moment they fill; ``checkpoint()`` seals what is
    buffered early (the recorder calls it about once a second, bounding what a crash loses);
    ``close()`` seals the rest as the final chunk. Nothing is ever written in plaintext, and
    there are no temporary files.
    """

    def __init__(
        self,
        raw: BinaryIO,
        data_key: bytes,
        *,
        name: Path | str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        fsync_on_close: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError("chunk_size out of range")
        self.name = str(name)
        self._raw = raw
        self._header = _Header.new(data_key, chunk_size)
        self._cipher = self._header.chunk_cipher(data_key, name)
        self._buf = bytearray()
        self._index = 0
        self._fsync = fsync_on_close
        self.plaintext_bytes = 0
        self.ciphertext_bytes = 0
        self._sha = hashlib.sha256()
        # Set when a write to disk failed: the file then ends at the last complete record.
        self.failed: OSError | None = None
        self._emit(self._header.raw)

    @classmethod
    def create(
        cls, path: Path, data_key: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> EncryptedWriter:
        # O_EXCL: a recording file is never overwritten, least of all by a second writer.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        raw = os.fdopen(fd, "wb", buffering=0)
        try:
            return cls(raw, data_key, name=path, chunk_size=chunk_size)
        except BaseException:
            raw.close()
            raise

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Muxers then write streaming-style (no seeking back to patch sizes), which is what
        # lets every byte be sealed once and never rewritten.
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError(f"{self.name}: write to a closed EncryptedWriter")
        if self.failed is not None:
            raise self.failed
        n = len(data)
        self._buf += data
        size = self._header.chunk_size
        while len(self._buf) >= size:
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            self._seal(chunk, final=False)
        self.plaintext_bytes += n
        return n

    def checkpoint(self) -> None:
        """Seal the buffered bytes now, so they survive a crash (a short non-final chunk)."""
        if self._buf and not self.closed and self.failed is None:
            chunk = bytes(self._buf)
            self._buf.clear()
            self._seal(chunk, final=False)

    def flush(self) -> None:
        # Sealed records go straight to an unbuffered fd; buffered plaintext stays buffered
        # (sealing it is checkpoint()'s job, so a chatty flush() cannot bloat the file).
        pass

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.failed is None:
                self._seal(bytes(self._buf), final=True)
                self._buf.clear()
                if self._fsync:
                    os.fsync(self._raw.fileno())
        finally:
            self._raw.close()
            super().close()

    def abort(self) -> None:
        """Close without a final chunk: the file stays readable and reports as truncated."""
        if self.closed:
            return
        self.failed = self.failed or OSError("aborted")
        self.close()

    @property
    def complete(self) -> bool:
        """True once closed with a final chunk."""
        return self.closed and self.failed is None

    @property
    def sha256(self) -> str:
        """SHA-256 of the ciphertext written so far (the whole file once closed)."""
        return self._sha.hexdigest()

    def _seal(self, chunk: bytes, *, final: bool) -> None:
        sealed = self._cipher.encrypt(
            _nonce(self._index), chunk, _aad(self._header.raw, self._index, final)
        )
        self._emit(_LEN.pack(len(sealed)) + sealed)
        self._index += 1

    def _emit(self, record: bytes) -> None:
        try:
            done = 0
            while done < len(record):
                n = self._raw.write(record[done:])
                if n is None or n <= 0:
                    raise OSError("short write")
                done += n
        except OSError as e:
            # Disk full, most likely. Cut the file back to the last complete record (ftruncate
            # needs no free space), so it stays readable and reports as truncated.
            self.failed = e
            try:
                self._raw.truncate(self.ciphertext_bytes)
            except (OSError, io.UnsupportedOperation, AttributeError):
                pass
            raise
        self.ciphertext_bytes += len(record)
        self._sha.update(record)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        piece = f.read(n - len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def _find_index(cipher: AESGCM, header: bytes, sealed: bytes, position: int) -> int | None:
    """The index (other than ``position``) this record authenticates under, if any."""
    lo = max(0, position - _REORDER_WINDOW)
    for index in range(lo, position + _REORDER_WINDOW + 1):
        if index == position:
            continue
        for final in (False, True):
            try:
                cipher.decrypt(_nonce(index), sealed, _aad(header, index, final))
                return index
            except InvalidTag:
                pass
    return None


class _Record:
    __slots__ = ("final", "index", "plaintext")

    def __init__(self, index: int, plaintext: bytes, final: bool) -> None:
        self.index = index
        self.plaintext = plaintext
        self.final = final


def _open_chunk(
    cipher: AESGCM, header: _Header, sealed: bytes, index: int, is_last: bool, name: Path | str
) -> _Record:
    """Authenticate record ``index``; ``is_last``: nothing follows it in the file."""
    for final in (is_last, not is_last):
        try:
            plain = cipher.decrypt(_nonce(index), sealed, _aad(header.raw, index, final))
        except InvalidTag:
            continue
        if final and not is_last:
            raise ReorderedError(name, f"the final chunk is at position {index}, not last")
        return _Record(index, plain, final)
    moved = _find_index(cipher, header.raw, sealed, index)
    if moved is not None:
        raise ReorderedError(
            name, f"chunk {moved} found at position {index}: chunks were reordered"
        )
    raise TamperedError(name, f"chunk {index} fails authentication: the file was altered")


def iter_plaintext(path: Path | str, data_key: bytes) -> Iterator[bytes]:
    """Yield the plaintext chunk by chunk, each authenticated before it is yielded.

    Raises (after yielding every good chunk before the problem) TruncatedError when the
    file has no final chunk, TamperedError / ReorderedError on altered or moved chunks;
    WrongKeyError and FormatError before yielding anything.
    """
    name = str(path)
    with open(path, "rb") as f:
        header = _Header.parse(_read_exact(f, HEADER_SIZE), name)
        cipher = header.chunk_cipher(data_key, name)
        limit = header.chunk_size + _TAG
        index = 0
        readable = 0
        pending: bytes | None = None  # one record read ahead, to know whether it is the last
        raw_len = _read_exact(f, _LEN.size)
        while True:
            if pending is None:
                if not raw_len:
                    raise TruncatedError(
                        name,
                        f"no final chunk after {index} chunks ({readable} bytes readable): "
                        "the writer stopped early (crash or disk full)",
                        readable,
                    )
                if len(raw_len) < _LEN.size:
                    raise TruncatedError(
                        name, f"chunk {index} is incomplete ({readable} bytes readable)", readable
                    )
                (length,) = _LEN.unpack(raw_len)
                if not _TAG <= length <= limit:
                    raise TamperedError(name, f"chunk {index} has an impossible length {length}")
                sealed = _read_exact(f, length)
                if len(sealed) < length:
                    raise TruncatedError(
                        name, f"chunk {index} is incomplete ({readable} bytes readable)", readable
                    )
                pending = sealed
            raw_len = _read_exact(f, _LEN.size)
            record = _open_chunk(cipher, header, pending, index, not raw_len, name)
            pending = None
            readable += len(record.plaintext)
            if record.plaintext:
                yield record.plaintext
            if record.final:
                return
            index += 1


def decrypt_to_bytes(path: Path | str, data_key: bytes, *, allow_truncated: bool = False) -> bytes:
    """The whole plaintext in memory (never on disk). ``allow_truncated``: keep what decrypts."""
    out = bytearray()
    try:
        for chunk in iter_plaintext(path, data_key):
            out += chunk
    except TruncatedError:
        if not allow_truncated:
            raise
    return bytes(out)


class DecryptedReader(io.RawIOBase):
    """A read-only, seekable view of an encrypted file's plaintext, decrypted on demand.

    Opening scans the record lengths (no decryption) to index chunk offsets, and
    authenticates the last record to know at once whether the file is complete. Reads
    decrypt one chunk at a time (one is cached), so PyAV can demux a long recording without
    the plaintext ever being on disk or all in memory.
    """

    def __init__(self, path: Path | str, data_key: bytes, *, allow_truncated: bool = False) -> None:
        super().__init__()
        self.name = str(path)
        self._f = open(path, "rb")  # closed in close()
        try:
            self._setup(data_key, allow_truncated)
        except BaseException:
            self._f.close()
            raise

    def _setup(self, data_key: bytes, allow_truncated: bool) -> None:
        name = self.name
        self._header = _Header.parse(_read_exact(self._f, HEADER_SIZE), name)
        self._cipher = self._header.chunk_cipher(data_key, name)
        limit = self._header.chunk_size + _TAG
        size = os.fstat(self._f.fileno()).st_size
        # (file offset of ciphertext, ciphertext length, plaintext start)
        self._records: list[tuple[int, int, int]] = []
        pos, plain = HEADER_SIZE, 0
        incomplete = False
        while pos < size:
            self._f.seek(pos)
            raw_len = _read_exact(self._f, _LEN.size)
            if len(raw_len) < _LEN.size:
                incomplete = True
                break
            (length,) = _LEN.unpack(raw_len)
            if not _TAG <= length <= limit:
                raise TamperedError(
                    name, f"chunk {len(self._records)} has an impossible length {length}"
                )
            if pos + _LEN.size + length > size:
                incomplete = True
                break
            self._records.append((pos + _LEN.size, length, plain))
            plain += length - _TAG
            pos += _LEN.size + length
        self.truncated = incomplete
        if self._records and not incomplete:
            last = self._load(len(self._records) - 1)
            self.truncated = not last.final
        elif not self._records:
            self.truncated = True
        self._size = plain
        if self.truncated and not allow_truncated:
            raise TruncatedError(
                name, f"no final chunk ({plain} bytes readable): the writer stopped early", plain
            )
        self._pos = 0

    _cached: _Record | None = None

    def _load(self, i: int) -> _Record:
        if self._cached is not None and self._cached.index == i:
            return self._cached
        offset, length, _ = self._records[i]
        self._f.seek(offset)
        sealed = _read_exact(self._f, length)
        is_last = i == len(self._records) - 1 and not getattr(self, "truncated", False)
        record = _open_chunk(self._cipher, self._header, sealed, i, is_last, self.name)
        if record.final and i != len(self._records) - 1:
            raise ReorderedError(self.name, f"the final chunk is at position {i}, not last")
        self._cached = record
        return record

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    @property
    def size(self) -> int:
        return self._size

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = self._chunk_at(self._pos)
            record = self._load(i)
            start = self._pos - self._records[i][2]
            piece = record.plaintext[start : start + len(view) - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
        return done

    def _chunk_at(self, pos: int) -> int:
        # Binary search over plaintext starts.
        lo, hi = 0, len(self._records) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._records[mid][2] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def open_decrypted(
    path: Path | str, data_key: bytes, *, allow_truncated: bool = False
) -> DecryptedReader:
    """A seekable plaintext view for PyAV: ``av.open(open_decrypted(path, key))``."""
    return DecryptedReader(path, data_key, allow_truncated=allow_truncated)


def check_file(path: Path | str, data_key: bytes) -> int:
    """Authenticate every chunk; return the plaintext size or raise the RecordingError found."""
    return sum(len(c) for c in iter_plaintext(path, data_key))


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "DecryptedReader",
    "EncryptedWriter",
    "Keystore",
    "RecordingError",
    "check_file",
    "decrypt_to_bytes",
    "iter_plaintext",
    "load_master_key",
    "load_or_create_master_key",
    "master_key_id",
    "open_decrypted",
    "parse_master_key",
]
