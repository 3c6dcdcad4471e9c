"""The server the bench measures, as its own process: ``python -m bench.server``.

``--mode forward`` is the product exactly as ``teleconsult serve`` runs it (signaling.app.run);
``--mode relay`` is the same app with the MediaRelay baseline installed (bench/relay.py).
The join-token secret comes from TELECONSULT_BENCH_SECRET (hex) so the bench can mint tokens.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from types import MappingProxyType

from media.config import MediaConfig
from rooms.consultation import PARTICIPANT_CAP
from signaling.config import ServerConfig


def lift_room_cap(cap: int) -> None:
    """The product caps a room at 2, 8 or 12 participants; fan-out to N needs N + 1.

    Rebinds the in-memory store's view of the caps in this process only: the Worker and
    the protocol are untouched, so what is measured is the product's media path.
    """
    import rooms.memory

    rooms.memory.PARTICIPANT_CAP = MappingProxyType(  # type: ignore[misc]
        {kind: max(limit, cap) for kind, limit in PARTICIPANT_CAP.items()}
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--mode", choices=["forward", "relay"], default="forward")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--room-cap",
        type=int,
        default=0,
        help="lift every consultation kind's participant cap to at least this (bench only)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.room_cap:
        lift_room_cap(args.room_cap)
    if args.mode == "relay":
        from bench import relay

        relay.install()
    from signaling.app import run

    secret = bytes.fromhex(os.environ["TELECONSULT_BENCH_SECRET"])
    config = ServerConfig(
        host="127.0.0.1",
        port=args.port,
        data_dir=args.data_dir,
        secret=secret,
        media=MediaConfig(answer_timeout_s=30.0),
    )
    run(config)


if __name__ == "__main__":
    main()
