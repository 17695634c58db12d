"""Make the repository root importable when pytest is run as ``.venv/bin/pytest`` without an
installed project (these test directories are not packages, so pytest inserts only their own
directory into ``sys.path``)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
