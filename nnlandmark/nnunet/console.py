"""Where nnU-Net's own output goes: a log file, not the user's console.

nnU-Net talks to its user as a command-line tool: ``prepare`` would print its
whole plans dictionary, the fingerprint extractor its own progress bar,
``"Using <class ...SimpleITKIO> as reader/writer"`` from its worker processes,
each trainer ``"Using device: cpu"`` and each predictor on a CPU
``"perform_everything_on_device=True is only supported for cuda devices!"``.
Some of it is written with ``print``, some by ``tqdm`` to ``sys.stderr`` and
some by child processes straight to file descriptors 1 and 2, so
:func:`captured` redirects at both levels: the Python streams and the
descriptors (inherited by every process started inside the block), plus the
warnings other packages raise there.

The layers above say where the log goes (:func:`nnunet_log`: the project's
``logs/nnunet.log``); without one it is a file in the system's temporary
folder. Either is named once on the console, when the first :func:`captured`
block opens it. The adapter wraps its calls into nnU-Net in :func:`captured` and draws
its own progress bars on :func:`console_stream`, which stays the console.

The state lives in environment variables so that processes started inside a
block (nnU-Net's workers, multi-GPU training's ranks) log to the same file.

>>> with quiet_demo() as (console, log):
...     with captured():
...         print("nnU-Net: a dictionary")
...         print("our bar", file=console_stream())
...     print(console.getvalue().replace(str(log), "LOG"), end="")
...     print(log.read_text(), end="")
nnU-Net's messages: LOG
our bar
nnU-Net: a dictionary
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

QUIET, NORMAL, VERBOSE = 0, 1, 2
LOG_FILE_NAME = "nnunet.log"
#: the log file nnU-Net's output goes to, for this process and the ones it starts
_LOG_VARIABLE = "NNLANDMARK_NNUNET_LOG"
#: the log files already named on the console (a process started inside a block names none again)
_ANNOUNCED_VARIABLE = "NNLANDMARK_NNUNET_LOG_ANNOUNCED"
_VERBOSITY_VARIABLE = "NNLANDMARK_VERBOSITY"
#: the console while a :func:`captured` block redirects the standard streams (None outside)
_console = None
_OUR_PACKAGE = str(Path(__file__).resolve().parents[1])


@contextmanager
def at_verbosity(level: int):
    """``QUIET``: the log is not named on the console (the CLI's ``-q`` also turns progress bars
    off); ``NORMAL``; ``VERBOSE``: nnU-Net's output is not captured, it reaches the console as it
    would without nnlandmark. For the block (and the processes started in it)."""
    saved = os.environ.get(_VERBOSITY_VARIABLE)
    os.environ[_VERBOSITY_VARIABLE] = str(int(level))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_VERBOSITY_VARIABLE, None)
        else:
            os.environ[_VERBOSITY_VARIABLE] = saved


def verbosity() -> int:
    return int(os.environ.get(_VERBOSITY_VARIABLE, NORMAL))


@contextmanager
def nnunet_log(path):
    """nnU-Net's output inside this block goes to ``path`` (created, with its folder, only when a
    :func:`captured` block runs: a command refused before any work leaves none). An enclosing
    block's log wins: ``demo`` keeps one log for its
    prepare, train and predict."""
    if os.environ.get(_LOG_VARIABLE):
        yield Path(os.environ[_LOG_VARIABLE])
        return
    os.environ[_LOG_VARIABLE] = str(Path(path).resolve())
    try:
        yield Path(os.environ[_LOG_VARIABLE])
    finally:
        os.environ.pop(_LOG_VARIABLE, None)


def current_log() -> Path:
    """The log :func:`captured` writes to now: :func:`nnunet_log`'s, else one per process in the
    system's temporary folder (``predict`` without a project writes there)."""
    chosen = os.environ.get(_LOG_VARIABLE)
    if chosen:
        return Path(chosen)
    return Path(tempfile.gettempdir()) / f"nnlandmark-{os.getpid()}-{LOG_FILE_NAME}"


def console_stream():
    """Where our own progress bars and lines go: the console, also inside a :func:`captured` block."""
    return _console if _console is not None else sys.stderr


def _announce(log: Path, console) -> None:
    announced = os.environ.get(_ANNOUNCED_VARIABLE, "").split(os.pathsep)
    if str(log) in announced:
        return
    os.environ[_ANNOUNCED_VARIABLE] = os.pathsep.join([*filter(None, announced), str(log)])
    if verbosity() > QUIET:
        print(f"nnU-Net's messages: {log}", file=console, flush=True)


def _fd_backed(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # pytest's capsys, a StringIO, a closed stream
        return False


@contextmanager
def captured():
    """Send what nnU-Net writes inside the block (``print``, ``sys.stderr``, file descriptors 1
    and 2, child processes, other packages' warnings) to :func:`current_log`, named on the
    console the first time; nnlandmark's own warnings and :func:`console_stream` still reach
    the console. Nested blocks are one block; with ``VERBOSE`` nothing is redirected."""
    global _console
    if _console is not None or verbosity() >= VERBOSE:
        yield
        return
    log_path = current_log().resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console = sys.stderr
    _announce(log_path, console)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_streams = sys.stdout, sys.stderr
    saved_fds = {}
    with open(log_path, "a", buffering=1) as log:
        try:
            for fd in (1, 2):
                try:
                    saved_fds[fd] = os.dup(fd)
                except OSError:  # no such descriptor (a daemon, some embedded interpreters)
                    continue
                os.dup2(log.fileno(), fd)
            if _fd_backed(console, 2) and 2 in saved_fds:
                # the console's stream writes to descriptor 2, which is the log now: a copy of the old one
                console = os.fdopen(os.dup(saved_fds[2]), "w", buffering=1)
            sys.stdout = sys.stderr = log
            _console = console
            with warnings.catch_warnings():
                warnings.showwarning = _warning_router(log, console)
                yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, copy in saved_fds.items():
                os.dup2(copy, fd)
                os.close(copy)
            _console = None
            if console is not saved_streams[1]:
                console.close()


def _warning_router(log, console):
    """Our warnings (raised from nnlandmark's code) to the console, shown as before; other
    packages' (nnU-Net's, torch's) to the log."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(_OUR_PACKAGE):
            shown(message, category, filename, lineno, console if file is None else file, line)
        else:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))
    return show


@contextmanager
def quiet_demo():
    """For this module's example: a console and a log in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        console, saved = io.StringIO(), sys.stderr
        sys.stderr = console
        try:
            with nnunet_log(Path(folder) / LOG_FILE_NAME) as log:
                yield console, log
        finally:
            sys.stderr = saved
