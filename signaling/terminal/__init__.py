"""Nursing-home terminals on the server: the terminal's page and endpoints, its live
connection, and calling and revoking it (docs/terminals.md)."""
