"""``recordings`` subcommands, ready to hang under ``teleconsult recordings``.

signaling/cli/main.py only needs::

    from recordings import cli as recordings_cli
    recordings_cli.add_parser(subparsers)          # adds "recordings" with its subcommands
    ...
    if args.command == "recordings":
        return recordings_cli.run(args, data_dir)

``python -m recordings --data-dir DIR ...`` runs the same commands stand-alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from recordings.catalog import Catalog
from recordings.composer import ComposeOptions, compose
from recordings.errors import RecordingError
from recordings.retention import Retention
from recordings.store import RecordingStore


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("recordings", help="list, compose, verify and purge recordings")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="recordings_command", required=True)
    ls = sub.add_parser("list", help="a consultation's recordings (all consultations if none)")
    ls.add_argument("consultation", nargs="?")
    v = sub.add_parser("verify", help="check every file's hash and chunks; exit 1 on damage")
    v.add_argument("consultation", nargs="?")
    pu = sub.add_parser(
        "purge",
        help="crypto-shred consultations idle longer than DAYS: recordings, attachments and "
        "clinical records",
    )
    pu.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    h = sub.add_parser("hold", help="put a consultation under legal hold (never purged)")
    h.add_argument("consultation")
    h.add_argument("--reason", default="")
    r = sub.add_parser("release", help="lift a legal hold")
    r.add_argument("consultation")
    c = sub.add_parser("compose", help="compose one recording's grid MP4 (encrypted)")
    c.add_argument("consultation")
    c.add_argument("recording")
    c.add_argument("--preset", default=ComposeOptions.preset, help="x264 preset")
    for sp in (ls, v, pu):
        sp.add_argument("--json", action="store_true", help="machine-readable output")


def _bar(out: TextIO) -> Any:
    def progress(fraction: float) -> None:
        filled = int(fraction * 30)
        out.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {fraction * 100:5.1f}%")
        if fraction >= 1.0:
            out.write("\n")
        out.flush()

    return progress


def run(args: argparse.Namespace, data_dir: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up now, not at import: tests and callers redirect it
    try:
        store = RecordingStore(data_dir)
        return _run(args, store, out)
    except RecordingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, store: RecordingStore, out: TextIO) -> int:
    cmd = args.recordings_command
    retention = Retention(store)
    if cmd == "list":
        catalog = Catalog(store)
        consultations = [args.consultation] if args.consultation else catalog.consultations()
        rows = [info for c in consultations for info in catalog.list(c)]
        if args.json:
            print(json.dumps([r.__dict__ for r in rows], indent=1), file=out)
        for r in [] if args.json else rows:
            flag = " TRUNCATED" if r.truncated else ""
            held = " HELD" if retention.is_held(r.consultation) else ""
            composed = f" composed {r.composed_duration_s:.0f}s" if r.composed else ""
            print(
                f"{r.consultation} {r.recording} {r.state}{flag}{held} "
                f"tracks={r.tracks}{composed}{' ' + r.error if r.error else ''}",
                file=out,
            )
        return 0
    if cmd == "verify":
        report = retention.verify(args.consultation)
        if args.json:
            doc = {"files_checked": report.files_checked, "ok": report.ok}
            doc["problems"] = [p.__dict__ for p in report.problems]
            print(json.dumps(doc, indent=1), file=out)
        else:
            for p in report.problems:
                print(f"{p.kind.upper()}: {p.path}: {p.detail}", file=out)
            print(
                f"{report.files_checked} files checked, {len(report.problems)} problems",
                file=out,
            )
        return 0 if report.ok else 1
    if cmd == "purge":
        result = retention.purge(args.older_than)
        if args.json:
            print(json.dumps(result.__dict__, indent=1), file=out)
        else:
            for c in result.purged:
                print(
                    f"purged {c} (data key destroyed: its recordings, attachments and clinical "
                    "records are unreadable; files deleted)",
                    file=out,
                )
            for c in result.held:
                print(f"kept {c}: under legal hold", file=out)
            print(f"{len(result.purged)} purged, {len(result.held)} held", file=out)
        return 0
    if cmd == "hold":
        retention.hold(args.consultation, args.reason)
        print(f"{args.consultation} is under legal hold", file=out)
        return 0
    if cmd == "release":
        released = retention.release(args.consultation)
        print(f"{args.consultation}: {'released' if released else 'was not held'}", file=out)
        return 0
    if cmd == "compose":
        entry = compose(
            store,
            args.consultation,
            args.recording,
            progress=_bar(sys.stderr),
            options=ComposeOptions(preset=args.preset),
        )
        print(f"composed {entry.file}: {entry.duration_s:.1f} s", file=out)
        return 0
    raise AssertionError(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recordings")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("TELECONSULT_DATA_DIR"),
        help="the server's data dir (default $TELECONSULT_DATA_DIR)",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("--data-dir or $TELECONSULT_DATA_DIR is required")
    return run(args, args.data_dir)
