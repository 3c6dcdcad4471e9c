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

from media.config import MediaConfig
from signaling.config import ServerConfig


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--mode", choices=["forward", "relay"], default="forward")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
