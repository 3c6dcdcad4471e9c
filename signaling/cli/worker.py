"""``teleconsult worker --redis URL``: one media Worker process on the Redis bus.

It takes the same media options as ``serve`` and the same data directory (the master key
for recordings, which it writes): several Worker processes, one per core, share both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from media.bus import serve_worker
from media.config import MediaConfig
from media.errors import MediaError
from recordings.room_recorder import RoomRecorder
from recordings.store import RecordingStore
from signaling.cli import configuration, media_args
from signaling.cli.media_args import UsageError
from signaling.http import logsafe
from signaling.keys import default_data_dir

REDIS_URL_ENV = "TELECONSULT_REDIS_URL"

log = logging.getLogger(__name__)


def redis_url_arg(p: argparse._ActionsContainer) -> None:
    # $TELECONSULT_REDIS_URL comes through the configuration (signaling/cli/configuration.py).
    p.add_argument(
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="the Redis of the deployment, e.g. redis://10.0.0.2:6379/0",
    )


def add_parser(sub: argparse._SubParsersAction, data_dir_arg: Callable[..., None]) -> None:  # type: ignore[type-arg]
    w = sub.add_parser(
        "worker",
        help="run one media Worker process on the Redis bus (one per core)",
        description="Registers in Redis with a heartbeat and its load; consultations are "
        "placed on the least-loaded live Worker.",
    )
    w.set_defaults(handler=worker)
    configuration.config_arg(w)
    general = w.add_argument_group("general")
    data_dir_arg(general)
    configuration.log_level_arg(general)
    media_args.add(w.add_argument_group("media"))
    redis_url_arg(w.add_argument_group("redis"))


def checked(args: argparse.Namespace) -> MediaConfig:
    """The worker's options checked, with nothing started (``check-config`` too)."""
    if not args.redis_url:
        raise UsageError(f"--redis URL (or ${REDIS_URL_ENV}) is required")
    return media_args.config(args)


def worker(args: argparse.Namespace) -> int:
    media = checked(args)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logsafe.install()
    store = RecordingStore(args.data_dir or default_data_dir())

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        await serve_worker(
            args.redis_url,
            media,
            recordings=RoomRecorder.factory(store),
            ready=lambda worker_id: log.info("media Worker %s is up", worker_id),
        )

    try:
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(run())
    except MediaError as exc:
        print(f"teleconsult: error: {exc.message}", flush=True)
        return 1
    return 0
