"""All-or-nothing publishing of a run's artifacts, and the staging folder they are built in.

An export builds everything in ``OUT/.staging-<pid>-*`` and moves it into ``OUT`` at the
end. Publishing checks every destination name first (a plain file where a folder goes is a
:class:`ConfigError` before anything is replaced), moves the previous artifacts aside, moves
the new ones in, and on any failure puts the previous ones back. SIGTERM is handled like
SIGINT (``KeyboardInterrupt``: staging removed, exit 130), and staging folders left by a
killed run (their process is gone) are removed by the next run into the same folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from tinyprune.errors import ConfigError

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"

#: errno values that mean "this folder cannot take the files", not a bug in tinyprune.
DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
)


def disk_error(e: BaseException, out: Path) -> ConfigError | None:
    """A :class:`ConfigError` for an OSError of the disk class anywhere in ``e``'s chain."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 20:
        if isinstance(cur, OSError) and cur.errno in DISK_ERRNOS:
            what = os.strerror(cur.errno) if cur.errno else str(cur)
            msg = (
                f"cannot write the export into {str(out)!r}: {what} (errno "
                f"{errno.errorcode.get(cur.errno or 0, cur.errno)}); free disk space or choose "
                "a writable --out. Nothing was replaced"
            )
            return ConfigError(msg)
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove ``.staging-*`` folders in ``out`` whose process no longer runs; return them."""
    removed = []
    for path in out.glob(f"{STAGING_PREFIX}*"):
        if not path.is_dir() or path.is_symlink() or _owner_alive(path.name):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        log.info("removed %s, left by an earlier interrupted run", path)
    return removed


def _owner_alive(name: str) -> bool:
    pid_text = name[len(STAGING_PREFIX) :].split("-", 1)[0]
    if not pid_text.isdigit():
        return False  # an older tinyprune's staging folder: no owner recorded
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A private folder inside ``out`` (same file system); removed on exit, also on SIGTERM."""
    with sigterm_as_interrupt():
        work = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` like SIGINT (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_collisions(out: Path, names: dict[str, bool]) -> None:
    """Raise if a destination exists with the wrong kind (``names``: name -> is a folder).

    Raises:
        ConfigError: naming the clashing path; nothing has been replaced.
    """
    for name, is_dir in names.items():
        dest = out / name
        if not (dest.exists() or dest.is_symlink()):
            continue
        if dest.is_symlink() or dest.is_dir() != is_dir:
            kind = "a symlink" if dest.is_symlink() else "a folder" if dest.is_dir() else "a file"
            want = "folder" if is_dir else "file"
            msg = (
                f"--out {str(out)!r} already holds {kind} named {name!r} where the export writes "
                f"a {want}; move it away or choose another --out (nothing was replaced)"
            )
            raise ConfigError(msg)


def publish(work: Path, out: Path, files: dict[str, str], remove: tuple[str, ...] = ()) -> None:
    """Move ``work/<name>`` for every name in ``files`` into ``out``, all or nothing.

    ``remove`` names stale files of an earlier run that go too (e.g. C sources that this run
    did not produce). On failure the previous contents of ``out`` are restored.
    """
    names = list(dict.fromkeys(files.values()))
    check_collisions(out, {n: (work / n).is_dir() for n in names})
    trash = Path(tempfile.mkdtemp(prefix=".old-", dir=work))
    moved_aside: list[str] = []
    placed: list[str] = []
    try:
        for name in (*names, *remove):
            if (out / name).exists() or (out / name).is_symlink():
                os.replace(out / name, trash / name)
                moved_aside.append(name)
        for name in names:
            os.replace(work / name, out / name)
            placed.append(name)
    except BaseException:
        _roll_back(out, trash, placed, moved_aside)
        raise


def _roll_back(out: Path, trash: Path, placed: list[str], moved_aside: list[str]) -> None:
    for name in placed:
        dest = out / name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest, ignore_errors=True)
        else:
            dest.unlink(missing_ok=True)
    for name in moved_aside:
        with contextlib.suppress(OSError):
            os.replace(trash / name, out / name)


__all__ = [
    "check_collisions",
    "disk_error",
    "publish",
    "remove_stale_staging",
    "sigterm_as_interrupt",
    "staging",
]
