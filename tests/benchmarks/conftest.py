"""benchmarks/ is a folder of scripts, not a package: its modules import one another as top-level
modules (`from _record import ...`), as `python benchmarks/bench_x.py` finds them; so do these tests."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
