from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The examples are imported by their tests as `examples.NAME`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
