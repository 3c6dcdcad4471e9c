"""Make the repo's top-level packages importable when running the bare ``pytest`` script.

The project is not installed into the venv (its setuptools is older than the build needs),
and ``.venv/bin/pytest`` does not put the working directory on sys.path the way
``python -m pytest`` does. Remove this once pyproject sets ``pythonpath = ["."]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
