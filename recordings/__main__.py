"""``python -m recordings``: the recordings commands without the server (see cli.py)."""

import sys

from recordings.cli import main

sys.exit(main())
