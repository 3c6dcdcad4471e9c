"""Records: what must outlive a process and be shared by every node (SQLAlchemy + Alembic).

SQLite in the data directory is the embedded default; PostgreSQL is selected by a URL. Live
state (who is connected where) is not here but in the RoomStore (memory or Redis).
"""
