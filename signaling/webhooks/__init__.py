"""Webhooks to the hospital's systems: the event stream, signed, from a persistent outbox."""
