"""`drx serve` with the PHI access log's `append` a no-op: the "without" side of
bench/access_log.py (the service itself has no switch that turns its audit log off).

    python -m bench.serve_without_access_log serve --port 18766
"""

from __future__ import annotations

import sys

from infrastructure.access_log import AccessLog
from interfaces import cli

AccessLog.append = lambda self, entry: None  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
