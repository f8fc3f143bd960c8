"""Run native-runtime calls in a fresh child process.

TFLite Micro and LiteRT's kernels can abort the whole Python process (SIGABRT) while
preparing a broken int8 model, e.g. one tensor with an absurd scale. A crash there must
become a clear :class:`~tinyprune.errors.ExportError`, not a dead CLI, so every call into a
native runtime goes through :func:`run_isolated`.

The child is a new interpreter started with ``subprocess`` (never ``fork``: the parent may
hold TensorFlow or torch threads). It imports only the module that defines the function,
so start-up stays cheap. Arguments and the result travel as pickles between this process and
the child it spawned (stdin, and a file in a private temporary folder): never a file a user
handed us, so unpickling them runs no code we did not send. The child's C-level
stderr goes to a file whose last lines end up in the error message, because that is where
native runtimes name the failing op ("Node PAD (number 3) failed to prepare").
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tinyprune.errors import ExportError, TinypruneError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable that tells the child where its stderr file is.
_STDERR_ENV = "TINYPRUNE_ISOLATE_STDERR"

#: Lines of the child's stderr quoted in a crash message.
STDERR_TAIL_LINES = 15

# The child registers the ``firmware_export`` package without running its ``__init__``,
# which pulls in the whole pipeline (torch, seconds of start-up); the runtime helpers the
# child calls need none of it. argv: [-c, result path, package dir].
_BOOTSTRAP = (
    "import sys, importlib.util as u\n"
    "d = sys.argv[2]\n"
    "if 'firmware_export' not in sys.modules:\n"
    "    s = u.spec_from_file_location('firmware_export', d + '/__init__.py',"
    " submodule_search_locations=[d])\n"
    "    sys.modules['firmware_export'] = u.module_from_spec(s)\n"
    "from firmware_export.isolate import _child_main\n"
    "_child_main()\n"
)


def run_isolated(
    fn: Callable[..., T],
    *args: Any,
    timeout: float = 300,
    stage: str = "runtime",
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)`` in a fresh Python process and return its result.

    Args:
        fn: A top-level function of an importable module (pickled by reference).
        *args: Positional arguments; must be picklable.
        timeout: Seconds before the child is killed.
        stage: Pipeline stage named in any :class:`ExportError` raised here.
        **kwargs: Keyword arguments; must be picklable.

    Returns:
        What ``fn`` returned (must be picklable).

    Raises:
        TinypruneError: Re-raised unchanged (same class and message) when ``fn`` raised one.
        ExportError: The child crashed (a signal such as SIGABRT, or a non-zero exit), timed
            out, or ``fn`` raised any other exception; the message quotes the child's stderr.
    """
    if getattr(fn, "__module__", "__main__") == "__main__" or "<locals>" in fn.__qualname__:
        msg = (
            f"run_isolated needs a top-level function of an importable module, got "
            f"{fn.__module__}.{fn.__qualname__}; move it into a module the child can import"
        )
        raise ExportError(msg, stage=stage)
    payload = pickle.dumps((list(sys.path), pickle.dumps((fn, args, kwargs))))
    with tempfile.TemporaryDirectory(prefix="tinyprune_iso_") as tmp:
        result_path = Path(tmp) / "result.pkl"
        stderr_path = Path(tmp) / "stderr.txt"
        returncode = _spawn(payload, result_path, stderr_path, timeout, stage, fn)
        stderr_tail = _tail(stderr_path)
        if returncode != 0 or not result_path.exists():
            raise ExportError(_crash_message(fn, returncode, stderr_tail), stage=stage)
        status, value = pickle.loads(result_path.read_bytes())  # our child's own result
    if status == "ok":
        return value  # type: ignore[no-any-return]
    if status == "tinyprune":
        raise value
    text, child_traceback = value
    logger.debug("child traceback of %s:\n%s", fn.__qualname__, child_traceback)
    msg = f"{stage}: {fn.__qualname__} failed in the child process: {text}"
    if stderr_tail:
        msg += f"\nlast lines of its stderr:\n{stderr_tail}"
    raise ExportError(msg, stage=stage)


def _spawn(
    payload: bytes,
    result_path: Path,
    stderr_path: Path,
    timeout: float,
    stage: str,
    fn: Callable[..., Any],
) -> int:
    """Start the child, feed it the payload and wait; return its exit code."""
    cmd = [sys.executable, "-c", _BOOTSTRAP, str(result_path), str(Path(__file__).parent)]
    env = {**os.environ, _STDERR_ENV: str(stderr_path)}
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        try:
            proc.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            proc.wait()
            msg = (
                f"{stage}: {fn.__qualname__} did not finish within {timeout:g} s in its child "
                f"process and was killed; raise the timeout or use a smaller model/input"
            )
            raise ExportError(msg, stage=stage) from e
        except BaseException:  # interrupted (SIGINT/SIGTERM): the child must not outlive us
            proc.kill()
            proc.wait()
            raise
    logger.debug("isolated %s exited with %d", fn.__qualname__, proc.returncode)
    return proc.returncode


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").strip()
    return "\n".join(text.splitlines()[-lines:])


def _crash_message(fn: Callable[..., Any], returncode: int, stderr_tail: str) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    elif returncode != 0:
        how = f"exited with code {returncode}"
    else:
        how = "exited without returning a result"
    msg = (
        f"{fn.__qualname__} {how} in its child process: the native runtime crashed, usually "
        f"on a broken or unsupported int8 model (e.g. a tensor with an absurd scale)."
    )
    if stderr_tail:
        msg += f"\nlast lines of its stderr:\n{stderr_tail}"
    else:
        msg += " It printed nothing on stderr."
    return msg


def capture_fd2(fn: Callable[[], object]) -> str:
    """Call ``fn`` with file descriptor 2 on a temp file; return what was written there.

    C++ runtimes (TFLM's ``print_allocations``) write to the C-level stderr, which
    ``contextlib.redirect_stderr`` does not see.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


def stderr_offset() -> int:
    """Inside an isolated child: the current size of its stderr file (0 elsewhere).

    Native runtimes write straight to file descriptor 2. A child function that must read
    what a call printed takes the offset before the call and :func:`stderr_since` after it;
    the text also stays in the file, so it survives a crash during the call.
    """
    if not os.environ.get(_STDERR_ENV):
        return 0
    sys.stderr.flush()
    return os.fstat(2).st_size


def stderr_since(offset: int) -> str:
    """Inside an isolated child: what was written to stderr after ``offset`` ("" elsewhere)."""
    path = os.environ.get(_STDERR_ENV)
    if not path:
        return ""
    sys.stderr.flush()
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _child_main() -> None:
    """Entry point of the child: read the call from stdin, write the outcome to argv[1]."""
    result_path = sys.argv[1]
    sys_path, blob = pickle.loads(sys.stdin.buffer.read())  # the call our parent sent
    sys.path[:] = [p for p in sys_path if p] + [p for p in sys.path if p not in sys_path]
    try:
        fn, args, kwargs = pickle.loads(blob)
        outcome: tuple[str, Any] = ("ok", fn(*args, **kwargs))
    except TinypruneError as e:
        outcome = ("tinyprune", e)
    except BaseException as e:  # anything else is reported, not lost
        outcome = ("other", (f"{type(e).__name__}: {e}", traceback.format_exc()))
    try:
        data = pickle.dumps(outcome)
    except Exception as e:  # an unpicklable result or exception
        text = f"could not send the result back: {type(e).__name__}: {e}"
        data = pickle.dumps(("other", (text, traceback.format_exc())))
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, result_path)
    sys.stdout.flush()
    sys.stderr.flush()
