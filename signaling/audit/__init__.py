"""The audit log: every sensitive action in a keyed, checkpointed hash chain."""
