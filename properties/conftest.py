"""Hypothesis profiles: `ci` (default; pinned and bounded) and `thorough` (local, long), defined
in profiles.py with the per-test budget helper `scaled`.

    HYPOTHESIS_PROFILE=thorough make test
"""

from profiles import load_from_env

load_from_env()
