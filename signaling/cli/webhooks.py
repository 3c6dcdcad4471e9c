"""``teleconsult webhooks status|retry``: what the outbox holds, and sending again what was
given up. Output names event ids, types, consultation ids and endpoint keys, never a URL's
query or a secret."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rooms.records.database import Database, resolve_url
from rooms.records.webhook_outbox import DeliveryState, WebhookOutbox
from signaling.cli import configuration
from signaling.cli.records import database_url_arg
from signaling.keys import default_data_dir
from signaling.webhooks.settings import WebhookSettings

_DEFAULTS = WebhookSettings()
LISTED = 50


def settings_args(p: argparse._ActionsContainer) -> None:
    """The sender's options (the endpoints themselves are file or environment only)."""
    p.add_argument(
        "--webhook-timeout",
        dest="webhook_timeout_s",
        type=float,
        default=_DEFAULTS.timeout_s,
        metavar="SECONDS",
        help="one attempt's limit (default: %(default)s)",
    )
    p.add_argument(
        "--webhook-concurrency",
        dest="webhook_concurrency",
        type=int,
        default=_DEFAULTS.concurrency,
        metavar="N",
        help="posts in flight at once (default: %(default)s)",
    )
    p.add_argument(
        "--webhook-retry-max",
        dest="webhook_retry_max_s",
        type=float,
        default=_DEFAULTS.retry_max_s,
        metavar="SECONDS",
        help="the longest wait between two attempts; waits double from 1 s up to it, with "
        "jitter (default: %(default)s)",
    )
    p.add_argument(
        "--webhook-give-up",
        dest="webhook_give_up_days",
        type=float,
        default=_DEFAULTS.give_up_days,
        metavar="DAYS",
        help="an event not delivered after this long is given up (dead, listed by "
        "`teleconsult webhooks status`) (default: %(default)s)",
    )


def add_parser(sub: argparse._SubParsersAction, data_dir_arg: Callable[..., None]) -> None:  # type: ignore[type-arg]
    w = sub.add_parser(
        "webhooks",
        help="the webhook outbox: status (counts and what was given up), retry",
        description="status: deliveries pending, delivered and dead, and the dead ones; "
        "retry: put dead deliveries back (all, or --event's) to be sent now.",
    )
    w.set_defaults(handler=webhooks)
    w.add_argument("action", choices=["status", "retry"])
    w.add_argument("--event", metavar="ID", help="with retry: only this event")
    configuration.config_arg(w)
    database_url_arg(w)
    data_dir_arg(w)
    settings_args(w)


def webhooks(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or default_data_dir()
    return asyncio.run(_run(args, resolve_url(data_dir, args.database_url)))


async def _run(args: argparse.Namespace, url: str) -> int:
    database = Database(url)
    try:
        await database.ensure_current()
        outbox = WebhookOutbox(database)
        if args.action == "retry":
            count = await outbox.retry(
                now=datetime.now(UTC),
                give_up_after=timedelta(days=args.webhook_give_up_days),
                event_id=args.event,
            )
            print(f"{count} deliveries back in the outbox; a running server sends them now")
            return 0
        counts = await outbox.counts()
        print(", ".join(f"{state}: {counts[state]}" for state in DeliveryState))
        for d in await outbox.list(DeliveryState.dead, limit=LISTED):
            print(
                f"dead {d.event_id} {d.event_type} consultation {d.consultation_id} "
                f"to {d.endpoint}, {d.attempts} attempts since "
                f"{d.created_at:%Y-%m-%d %H:%M:%S}Z: {d.last_error}"
            )
        return 0
    finally:
        await database.close()
