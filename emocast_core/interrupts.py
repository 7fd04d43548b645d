"""SIGTERM as an exception, so a terminated run cleans up like an interrupted one.

Python turns Ctrl-C (SIGINT) into `KeyboardInterrupt`, which unwinds the stack and lets every
`with`/`finally` remove its temporary files. SIGTERM (what `kill`, service managers and ComfyUI
launchers send) would end the process on the spot and leave them behind; `terminate_as_exception()`
makes it raise `Terminated` instead, for as long as the block runs, and puts the previous handler
back afterwards. Only the command line installs it; importing this package changes no handler.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_CODE_SIGINT = 128 + signal.SIGINT  # 130, the shell's code for a process ended by Ctrl-C
EXIT_CODE_SIGTERM = 128 + signal.SIGTERM  # 143


class Terminated(BaseException):
    """The process received SIGTERM. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way up swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` and SIGINT `KeyboardInterrupt` (even when the
    process was started with SIGINT ignored, as shells do for background jobs). Main thread only;
    elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
