"""``teleconsult``: the command line."""
