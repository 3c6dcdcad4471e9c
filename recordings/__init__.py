"""Recorder, encryption at rest, composer, catalog and retention (issue 4)."""
