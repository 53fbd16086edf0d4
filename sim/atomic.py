"""Whole writes: a file or a directory of results appears complete or not at all.

* :func:`write_file` writes a temp file beside the target and renames it into place.
* :func:`replace_dir` builds a whole directory (a workload, a report) in a temp directory beside the
  target and swaps it in with one rename (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames,
  with the old directory kept aside until the new one is in place and restored by the next writer if
  a kill came between them). A lock file beside the target (``.NAME.lock``, ``flock``, removed
  when the writer is done) makes a second writer of the same target wait, saying so, and fail with a clear message after
  ``LOAS_LOCK_WAIT`` seconds (default 600). A writer killed at any moment leaves the previous
  result intact; its temp directory is removed by the next writer.
* :func:`check_output` refuses, before any work is done, an output path that is a file, lies under a
  file or cannot be written.

Every refusal is a :class:`~sim.errors.UserError` naming the option and the path (exit 2).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from sim.errors import UserError

LOCK_WAIT_S = float(os.environ.get("LOAS_LOCK_WAIT", "600"))
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def check_output(path, *, flag: str = "--out", kind: str = "dir") -> Path:
    """Refuse an output ``path`` that cannot be written, before any work is done.

    Parameters
    ----------
    path : str or Path
        The directory (``kind="dir"``) or file (``kind="file"``) a command will write.
    flag : str
        The option that named it, for the message.

    Raises
    ------
    UserError
        If the path is a file where a directory is wanted (or the reverse), lies under a file, or
        its nearest existing ancestor is not a writable directory.
    """
    p = Path(path)
    if str(path) == "":
        raise UserError(f"{flag}: empty path")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: is a file, not a directory")
    if kind == "file" and p.is_dir():
        raise UserError(f"{flag} {p}: is a directory, not a file")
    q = p.absolute().parent
    while not q.exists() and q != q.parent:
        q = q.parent
    if not q.is_dir():
        raise UserError(f"{flag} {p}: lies under {q}, which is a file")
    if not os.access(q, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p}: cannot be written ({q} is not writable)")
    return p


def write_file(path, write: Callable | bytes | str) -> Path:
    """Write ``path`` whole: ``write(fileobj)`` (or the given bytes / text) goes to a temp file in the
    same directory, which is flushed, synced and renamed over ``path``. The temp file is removed on
    any error; ``path`` is either its old content or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_dead_temps(path)
    # the writer's pid in the name: a temp file a SIGKILL left behind (nothing can clean up after
    # that signal) is recognised as dead by the next write of the same file and removed
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, str):
                f.write(write.encode())
            elif isinstance(write, (bytes, bytearray)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _drop_dead_temps(path: Path) -> None:
    """Remove the temp files of :func:`write_file` for ``path`` whose writing process is gone."""
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = p.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _try_lock(lock: Path):
    """An fd holding the lock on ``lock``, or None while another process holds it. A lock file
    its holder unlinked meanwhile (see :func:`_locked`) is not the lock any more: try again."""
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def locked(target, flag: str = "--out"):
    """Hold the lock of ``target`` (``.NAME.lock`` beside it) for the block: the one-writer-at-a-time
    part of :func:`replace_dir`, for a folder that cannot be swapped whole."""
    target = Path(target).absolute()
    with _locked(target, flag):
        yield


@contextmanager
def _locked(target: Path, flag: str):
    lock = target.parent / f".{target.name}.lock"
    fd = _try_lock(lock)
    if fd is None:
        print(f"loas: waiting for another process writing {target} (lock {lock})", file=sys.stderr,
              flush=True)
        deadline = time.monotonic() + LOCK_WAIT_S
        while fd is None:
            if time.monotonic() > deadline:
                raise UserError(f"{flag} {target}: another process has been writing it for "
                                f"{LOCK_WAIT_S:g} s (lock {lock}); try again later")
            time.sleep(0.05)
            fd = _try_lock(lock)
    try:
        yield
    finally:
        # Unlink while still holding it, so no lock file is left behind; a waiter that opened the
        # old file notices (inode check in _try_lock). Only a killed writer leaves one (harmless).
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        os.close(fd)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _recover(target: Path) -> None:
    """Under the lock: put back an old directory a killed two-rename swap left aside, drop temp dirs."""
    aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if aside and not target.exists():
        os.rename(aside.pop(), target)
    for p in aside + list(target.parent.glob(f".{target.name}.tmp-*")):
        shutil.rmtree(p, ignore_errors=True)


def check_target(target, *, force: bool = True, flag: str = "--out", what: str = "report",
                 owned: Callable[[str], bool] = lambda name: True) -> Path:
    """The checks of :func:`replace_dir`, for a command to make before it starts its work: the path
    can be written (:func:`check_output`), an existing ``target`` is only replaced with ``force``
    and only if it holds nothing but files of its kind (``owned(name)``). Returns it as a Path."""
    target = check_output(target, flag=flag)
    if target.exists():
        if not force:
            raise UserError(f"{flag} {target}: the {what} exists; give --force to replace it")
        foreign = sorted(p.name for p in target.iterdir() if not owned(p.name))
        if foreign:
            raise UserError(f"{flag} {target}: holds {', '.join(foreign[:3])}"
                            f"{' ...' if len(foreign) > 3 else ''}, not files of a {what}; "
                            f"refusing to replace it (give a new or empty directory)")
    return target


@contextmanager
def replace_dir(target, *, force: bool = True, flag: str = "--out", what: str = "report",
                owned: Callable[[str], bool] = lambda name: True, keep: tuple = ()):
    """Build a directory whole and swap it in for ``target``.

    Yields a fresh temp directory beside ``target``; when the block ends normally it replaces
    ``target`` in one rename (the old content is removed after). On an error in the block, or a
    kill, ``target`` keeps its old content.

    Parameters
    ----------
    force : bool
        Replace an existing ``target``; if False an existing one is refused (before any work).
    what : str
        What the directory holds ("workload", "compare report"), for messages.
    owned : callable
        ``owned(file name)`` is True for files a directory of this kind holds. An existing
        ``target`` holding anything else is never replaced (it is somebody's folder, not a result).
    keep : tuple of str
        Entries of ``target`` carried into the new directory as they are (e.g. a result store that
        outlives its report): the temp directory starts with hard links to their files. A file
        another process adds to them while the block runs is in the old directory only.

    Raises
    ------
    UserError
        On an unwritable path, an existing target without ``force``, a target holding foreign
        files, or a lock held by another writer for longer than ``LOCK_WAIT_S``.
    """
    target = check_target(target, force=force, flag=flag, what=what, owned=owned).absolute()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {target}: cannot create its folder ({exc.strerror})") from None
    with _locked(target, flag):
        _recover(target)
        check_target(target, force=force, flag=flag, what=what, owned=owned)  # again, under the lock
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            for name in keep:
                if (target / name).exists():
                    shutil.copytree(target / name, tmp / name, copy_function=_link_or_copy)
            yield tmp
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            if not target.exists():
                os.rename(tmp, target)
            elif not _exchange(tmp, target):
                aside = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
                os.rename(target, aside)  # a kill right here: the next writer renames it back
                os.rename(tmp, target)
                shutil.rmtree(aside, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # after an exchange it holds the old content
