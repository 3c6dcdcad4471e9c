"""The token signing secret: from the environment, or a 0600 file in the data dir."""

from __future__ import annotations

import math
import os
import secrets
import stat
from collections import Counter
from pathlib import Path

from recordings.crypto import create_exclusive, make_private_dir

SECRET_ENV = "TELECONSULT_SECRET"
DATA_DIR_ENV = "TELECONSULT_DATA_DIR"
SECRET_FILE = "secret.key"
MIN_SECRET_CHARS = 32
# A 32-character random hex string estimates at 92-128 bits below (about 112 typically) and
# has 10 or more different characters all but once in ten thousand; "a" * 40, "ab" * 20, a
# word repeated or one character padded out estimate far lower or fail the other rules.
MIN_SECRET_BITS = 80
MIN_DISTINCT_CHARS = 8


class SecretError(RuntimeError):
    """The secret cannot be used as found. Messages never contain the secret."""


def default_data_dir() -> Path:
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "teleconsult"
    return Path.home() / ".local" / "share" / "teleconsult"


def load_or_create_secret(data_dir: Path) -> bytes:
    """The HMAC key for join tokens: the UTF-8 bytes of the secret string, never hex-decoded.

    Not decoding means a hospital system configured with the same string signs with the same
    key in any JWT library, whatever the string looks like.
    """
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        return _checked(from_env, f"${SECRET_ENV}")
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create(data_dir, path)
    return _read(path)


def _read(path: Path) -> bytes:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        # Anyone who can read it can mint a doctor's token for any consultation.
        raise SecretError(
            f"{path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    return _checked(path.read_text(encoding="utf-8"), str(path))


def _checked(text: str, origin: str) -> bytes:
    # Surrounding whitespace is a trailing newline from an editor or echo, never intended.
    value = text.strip()
    problem = weakness(value)
    if problem is not None:
        raise SecretError(
            f"the secret in {origin} {problem}; make one with: "
            "python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return value.encode("utf-8")


def weakness(value: str) -> str | None:
    """Why ``value`` is too weak to sign join tokens, or None.

    Anyone holding one leaked token can test guesses offline, so the secret must be long and
    unpredictable. Entropy cannot be measured from one string; this refuses what is surely
    weak (short, few distinct characters, a repeated pattern, a skewed character mix) and
    lets any random string of 32 characters or more pass.
    """
    if len(value) < MIN_SECRET_CHARS:
        return f"must be at least {MIN_SECRET_CHARS} characters"
    if len(set(value)) < MIN_DISTINCT_CHARS:
        return f"must have at least {MIN_DISTINCT_CHARS} different characters"
    for period in range(1, len(value) // 2 + 1):
        if value == (value[:period] * (len(value) // period + 1))[: len(value)]:
            return "must not be a repeated pattern"
    counts = Counter(value)
    per_char = -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())
    if per_char * len(value) < MIN_SECRET_BITS:
        return "is too predictable (use a random one)"
    return None


def _create(data_dir: Path, path: Path) -> None:
    make_private_dir(data_dir)
    # Hard-linked into place: a second server starting at the same moment either wins the
    # link or reads the complete file, never a half-written or replaced one (os.replace
    # would silently swap the secret under the first server).
    create_exclusive(path, (secrets.token_hex(32) + "\n").encode("ascii"))
