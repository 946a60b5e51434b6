"""SDK tests: make ``fablecast`` (clients/python) importable without an installed checkout."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "clients" / "python"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
