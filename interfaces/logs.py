"""How the service logs: one format, on standard error, for the CLI, every web worker and the
projector, uvicorn's own messages included (it is started without a logging config of its
own, so that its loggers reach this handler).

A log line is one line: control characters in a message (a `%0a` in a request path, say) are
escaped, so that no input can write a line that looks like another record. A traceback, the one
text that spans lines, is indented, so that none of its lines can pass for a record either.
What the service logs never includes secrets, signatures or patient data: those are kept out
where each message is written.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        text = super().formatException(ei)  # type: ignore[arg-type]
        return "\n".join("    | " + escape_controls(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    | " + escape_controls(line) for line in stack_info.splitlines())


class _StandardError(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes (as logging's last resort does),
    not to the one it was at start-up, which a test runner may have closed since."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(stream: TextIO | None = None) -> None:
    """Route every logger to one handler with the one-line format (again: replaces it)."""
    handler: logging.Handler = logging.StreamHandler(stream) if stream else _StandardError()
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger()
    for existing in [h for h in root.handlers if getattr(h, "drx", False)]:
        root.removeHandler(existing)
    handler.drx = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # No access log: request lines carry query strings (a patient id, say). uvicorn writes one
    # whenever its access logger has a handler, its own or an ancestor's (`hasHandlers()`),
    # whatever `access_log=False` said, so the logger must reach none.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
