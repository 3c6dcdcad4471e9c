"""The records database: an async SQLAlchemy engine and the Alembic migrations that shape it.

``sqlite+aiosqlite:///<data-dir>/records.db`` is the embedded default (aiosqlite runs SQLite
in a thread of its own, so no query touches the disk on the event loop);
``postgresql+asyncpg://...`` is for several nodes. Nothing creates tables behind Alembic's
back: ``upgrade()`` (``teleconsult db upgrade``) applies the migrations, and ``serve``
refuses a database that is behind (``NotMigrated``), with one exception: a brand-new
embedded SQLite file, which holds nothing to lose, is created at head by ``serve``.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DATABASE_URL_ENV = "TELECONSULT_DATABASE_URL"
SQLITE_FILE = "records.db"


class DatabaseError(RuntimeError):
    """The records database cannot be used as configured. Messages never carry a password."""


class NotMigrated(DatabaseError):
    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"the records database is at migration {current or 'none'}, this version needs "
            f"{head}: back it up, then run `teleconsult db upgrade`"
        )
        self.current = current
        self.head = head


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / SQLITE_FILE}"


def resolve_url(data_dir: Path, url: str | None = None) -> str:
    """``url``, else $TELECONSULT_DATABASE_URL, else SQLite in the data dir."""
    return url or os.environ.get(DATABASE_URL_ENV) or default_url(data_dir)


def safe_url(url: str) -> str:
    """The URL as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("rooms.records") / "migrations"))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


class Database:
    """Owns the engine; ``close()`` disposes of it."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(f"unsupported database {self.dialect!r}: SQLite or PostgreSQL")
        self._sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise DatabaseError("an in-memory SQLite database would vanish: give a file")
            self._sqlite_path = Path(parsed.database)
        self.engine: AsyncEngine = create_async_engine(url, **engine_options)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @classmethod
    def for_data_dir(cls, data_dir: Path, url: str | None = None) -> Database:
        return cls(resolve_url(data_dir, url))

    @property
    def is_new_embedded(self) -> bool:
        """A SQLite file that does not exist yet (or is empty): nothing in it to protect."""
        path = self._sqlite_path
        return path is not None and (not path.exists() or path.stat().st_size == 0)

    def _prepare_file(self) -> None:
        # Records are clinical metadata: the file is private from its first byte.
        path = self._sqlite_path
        if path is None or path.exists():
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    async def revision(self) -> str | None:
        self._prepare_file()
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
        except OSError as exc:
            raise DatabaseError(f"cannot reach the records database: {exc}") from None
        except Exception as exc:
            # Driver errors (asyncpg, sqlite3) have no common base; say what failed, not the URL.
            raise DatabaseError(
                f"cannot open the records database {safe_url(self.url)}: {type(exc).__name__}"
            ) from None

    async def ensure_current(self, *, create_embedded: bool = False) -> None:
        """Raise NotMigrated unless at head; a new embedded file is created if asked."""
        head = head_revision()
        if create_embedded and self.is_new_embedded:
            await self.upgrade()
            return
        current = await self.revision()
        if current != head:
            raise NotMigrated(current, head)

    async def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Apply migrations up to ``revision``; return (before, after)."""
        before = await self.revision()
        config = _alembic_config(self.url)

        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with self.engine.begin() as conn:
            await conn.run_sync(run)
        return before, await self.revision()

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not wait for the writer; a power cut loses at most the last commit.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Two writers (serve and a CLI command) wait for each other instead of failing at once.
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
