"""Staff consoles: login, sessions, the site admin console, live change notices."""
