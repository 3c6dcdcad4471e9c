"""The token signing secret: from the environment, or a 0600 file in the data dir."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from recordings.crypto import create_exclusive

SECRET_ENV = "TELECONSULT_SECRET"
DATA_DIR_ENV = "TELECONSULT_DATA_DIR"
SECRET_FILE = "secret.key"
MIN_SECRET_CHARS = 32


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
    if len(value) < MIN_SECRET_CHARS:
        raise SecretError(f"the secret in {origin} must be at least {MIN_SECRET_CHARS} characters")
    return value.encode("utf-8")


def _create(data_dir: Path, path: Path) -> None:
    if not data_dir.exists():
        data_dir.mkdir(mode=0o700, parents=True)
        # mkdir's mode is filtered by the umask; say exactly what we mean.
        data_dir.chmod(0o700)
    # Hard-linked into place: a second server starting at the same moment either wins the
    # link or reads the complete file, never a half-written or replaced one (os.replace
    # would silently swap the secret under the first server).
    create_exclusive(path, (secrets.token_hex(32) + "\n").encode("ascii"))
