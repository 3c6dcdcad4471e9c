"""The HTTP side: pages, the recordings API, the connection guard, log hygiene, TLS."""
