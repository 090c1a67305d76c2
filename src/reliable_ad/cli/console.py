"""What `reliable-ad` prints on stderr: our messages and one progress bar per phase, not the libraries' chatter.

By default, log records and Python warnings from third-party packages (diffusers, transformers, torch,
...) below ERROR are dropped, and diffusers' and transformers' per-component loading bars are off (a
hub download keeps its bar); our own warnings (a bad input, a missing estimator) still show. `-v` lets
everything through at INFO, `-vv` at DEBUG. Python warnings go through logging, each to the logger of
the module that issued it, so one rule, by module, covers both.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

OURS = "reliable_ad"
FORMAT = "%(levelname)s %(name)s: %(message)s"
_UNATTRIBUTED = ("root", "__main__", "py.warnings")  # scripts and warnings of unknown origin count as ours


def is_ours(logger_name: str) -> bool:
    return logger_name in _UNATTRIBUTED or logger_name == OURS or logger_name.startswith(OURS + ".")


class ThirdPartyFilter(logging.Filter):
    """Passes our records and any record at ERROR or above; drops the libraries' warnings and info."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or is_ours(record.name)


def _issuer(frame) -> str:
    """The module whose code called ``warnings.warn`` (whatever ``stacklevel`` it gave)."""
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back
    name = frame.f_globals.get("__name__") if frame is not None else None
    return name or "py.warnings"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if file is not None:  # an explicit stream: write it there, as Python does
        file.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    logging.getLogger(_issuer(sys._getframe(1))).warning("%s: %s", category.__name__, message)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``hooks[name](module)`` right after module ``name`` is first imported, so that a library is set
    up when (and only if) a command imports it: importing diffusers costs seconds that `--help` must not pay."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]):
        self.hooks = dict(hooks)

    def find_spec(self, name, path, target=None):
        hook = self.hooks.pop(name, None)
        if hook is None:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    hook(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


def _library_setup(verbose: int) -> dict[str, Callable[[ModuleType], None]]:
    """Per library logging module: quiet by default (no warnings, no loading bars), INFO with -vv."""

    def diffusers(logging_module: ModuleType) -> None:
        if verbose == 0:
            logging_module.set_verbosity_error()
            logging_module.disable_progress_bar()
        elif verbose >= 2:
            logging_module.set_verbosity_info()

    def transformers(logging_module: ModuleType) -> None:
        if verbose == 0:
            from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

            downloads_bar = not are_progress_bars_disabled()
            logging_module.set_verbosity_error()
            logging_module.disable_progress_bar()  # also turns off the hub's bars, which downloads need
            if downloads_bar:
                enable_progress_bars()
        elif verbose >= 2:
            logging_module.set_verbosity_info()

    return {"diffusers.utils.logging": diffusers, "transformers.utils.logging": transformers}


def setup_console(verbose: int) -> None:
    """Logging and warnings for one `reliable-ad` process at verbosity ``verbose`` (the count of -v)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    root = logging.getLogger()
    if not root.handlers:  # a host that set up logging (a test runner, a notebook) keeps its own
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        if verbose == 0:
            handler.addFilter(ThirdPartyFilter())
        root.addHandler(handler)
        root.setLevel(level)
        warnings.showwarning = _show_warning
    hooks = _library_setup(verbose)
    for name in list(hooks):
        if name in sys.modules:  # already imported: set it up now
            hooks.pop(name)(sys.modules[name])
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterImport)]
    if hooks:
        sys.meta_path.insert(0, _AfterImport(hooks))
