"""Where recordings live on disk, and the keystore that goes with them.

    <data_dir>/master.key                      (unless $TELECONSULT_MASTER_KEY is set)
    <data_dir>/recordings/keys/<consultation>.key          wrapped data key
    <data_dir>/recordings/holds/<consultation>.json        legal hold marker
    <data_dir>/recordings/consultations/<consultation>/<recording>/
        manifest.json.enc                                  encrypted manifest
        01-video.webm.enc, 02-audio.webm.enc, ...          one file per track segment
        composed.mp4.enc                                   the grid video, after the call

File names carry no participant id or name: what a file holds is only in the encrypted
manifest. Every directory here is created 0700 (``make_private_dir``), whoever creates it.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from recordings.crypto import Keystore, load_or_create_master_key, make_private_dir
from rooms.consultation import validate_consultation_id

MANIFEST_NAME = "manifest.json.enc"
COMPOSED_NAME = "composed.mp4.enc"
_RECORDING_ID = re.compile(r"R\d{8}T\d{6}Z-[0-9a-f]{6}")


def new_recording_id() -> str:
    # Sortable by start time, unguessable enough not to collide within a consultation.
    return time.strftime("R%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def validate_recording_id(s: str) -> str:
    if not isinstance(s, str) or _RECORDING_ID.fullmatch(s) is None:
        raise ValueError("bad recording id")
    return s


class RecordingStore:
    def __init__(self, data_dir: Path, master_key: bytes | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "recordings"
        if master_key is None:
            master_key = load_or_create_master_key(self.data_dir)
        self.keystore = Keystore(self.root / "keys", master_key)

    @property
    def holds_dir(self) -> Path:
        return self.root / "holds"

    @property
    def consultations_dir(self) -> Path:
        return self.root / "consultations"

    def consultation_dir(self, consultation: str) -> Path:
        return self.consultations_dir / validate_consultation_id(consultation)

    def recording_dir(self, consultation: str, recording: str) -> Path:
        return self.consultation_dir(consultation) / validate_recording_id(recording)

    def manifest_path(self, consultation: str, recording: str) -> Path:
        return self.recording_dir(consultation, recording) / MANIFEST_NAME

    def create_recording_dir(self, consultation: str, recording: str) -> Path:
        path = self.recording_dir(consultation, recording)
        make_private_dir(path.parent)
        path.mkdir(mode=0o700)  # a fresh id: an existing directory is an error
        path.chmod(0o700)
        return path

    def consultations(self) -> list[str]:
        """Every consultation with recordings on disk or a data key."""
        found = set(self.keystore.consultations())
        if self.consultations_dir.exists():
            found |= {p.name for p in self.consultations_dir.iterdir() if p.is_dir()}
        return sorted(found)

    def recordings(self, consultation: str) -> list[str]:
        d = self.consultation_dir(consultation)
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and _RECORDING_ID.fullmatch(p.name))
