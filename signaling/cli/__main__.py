"""``python -m signaling.cli``."""

import sys

from signaling.cli.main import main

sys.exit(main())
