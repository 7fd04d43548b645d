"""Keep the command line's output to what the user asked for.

Inside `library_output(verbose=False)`, the Hugging Face libraries' logging (e.g. transformers'
"BertModel LOAD REPORT ... UNEXPECTED" tables) and progress bars are off, and Python warnings raised
by other packages are dropped; warnings of this package (silent speech, no face found) are shown as
one ``warning: ...`` line each. Everything is restored on exit: nothing changes at import.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, TextIO

PACKAGE_DIR = Path(__file__).resolve().parent
# Libraries with a transformers-style logging module: (module, verbosity get/set, progress-bar switches).
_HF_LOGGING = ("transformers.utils.logging", "diffusers.utils.logging")


@contextmanager
def _hf_library_quiet(module_name: str) -> Iterator[None]:
    try:
        logging_module = importlib.import_module(module_name)
    except ImportError:  # not installed: nothing to quiet
        yield
        return
    verbosity = logging_module.get_verbosity()
    bars_enabled = logging_module.is_progress_bar_enabled()
    logging_module.set_verbosity_error()
    logging_module.disable_progress_bar()
    try:
        yield
    finally:
        logging_module.set_verbosity(verbosity)
        if bars_enabled:
            logging_module.enable_progress_bar()


@contextmanager
def _own_warnings_only(verbose: bool, stream: TextIO) -> Iterator[None]:
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        ours = Path(filename).resolve().is_relative_to(PACKAGE_DIR)
        if ours or verbose:
            text = str(message).splitlines()[0] if str(message) else category.__name__
            print(f"warning: {text}", file=stream)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show  # restored by catch_warnings on exit
        yield


@contextmanager
def library_output(verbose: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Third-party logging and warnings hidden unless `verbose`; this package's warnings as one line."""
    with ExitStack() as stack:
        stack.enter_context(_own_warnings_only(verbose, stream or sys.stderr))
        if not verbose:
            for module_name in _HF_LOGGING:
                stack.enter_context(_hf_library_quiet(module_name))
        yield
