"""perf/plotting.py: matplotlib for the perf scripts, wherever python3 comes from.

Debian's python3-matplotlib installs into /usr/lib/python3/dist-packages,
which only Debian's own /usr/bin/python3 searches. A python3 of the same
minor version from elsewhere on PATH (pyenv, a venv) can load it from
there, so pyplot() falls back to that folder before giving up.
"""

from __future__ import annotations

import sys

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None when unavailable."""
    for attempt in range(2):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            return plt
        except ImportError:
            if attempt == 0 and DEBIAN_DIST_PACKAGES not in sys.path:
                sys.path.append(DEBIAN_DIST_PACKAGES)
            else:
                return None
    return None
