"""One process per run folder: an advisory lock file `<run>/run.lock` naming its owner.

    with RunLock(out_dir):          # RunFolderBusy if another live process holds the folder
        run(cfg, out_dir)

The lock is an `flock` on `<run>/run.lock` (released by the kernel when the owner dies, also on
NFSv4, where the client maps it onto a POSIX lock); the file's text says who holds it
(`host pid start-time`), so the refusal names the owner. A lock file left by a process that died
is taken over, and said so. The file is removed on a clean exit.

A run that is replaced is never deleted: `move_run_aside` moves it to `<run>.replaced-<time>`
(`--fresh`, and the DAG's `avfusion.jobconfig` when a job's config changed).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from pathlib import Path

LOCK_NAME = "run.lock"


def move_run_aside(folder: str | Path, keep: tuple[str, ...] = ()) -> Path | None:
    """Move run folder `folder` to `<folder>.replaced-<time>` (never over an existing one) -> that path.
    Without `keep` the folder is renamed; with `keep` (names the caller still holds, e.g. its
    run.lock) the other entries move into a new folder of that name. None when there is nothing to move."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    entries = [p for p in folder.iterdir() if p.name not in keep]
    if keep and not entries:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    stale, n = folder.with_name(f"{folder.name}.replaced-{stamp}"), 1
    while stale.exists():
        n += 1
        stale = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    if not keep:
        folder.rename(stale)
        return stale
    stale.mkdir()
    for path in entries:
        shutil.move(str(path), str(stale / path.name))
    return stale


class RunFolderBusy(RuntimeError):
    """Another live process owns the run folder; the message names it."""


def lock_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / LOCK_NAME


def _owner_text() -> str:
    return f"host={socket.gethostname()} pid={os.getpid()} since={time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"


class RunLock:
    """Context manager holding `<out_dir>/run.lock` (exclusive, non-blocking)."""

    def __init__(self, out_dir: str | Path, announce=print):
        self.path = lock_path(out_dir)
        self.announce = announce
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown owner"
                os.close(fd)
                raise RunFolderBusy(f"run folder {self.path.parent} is in use by {owner} "
                                    f"(lock file {self.path}); wait for it or use another --out") from None
            # the file may have been removed (its owner exited) between our open and our lock:
            # then we hold a lock on an orphan inode; start over on the current file
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:
            self.announce(f"{self.path}: taking over a stale lock ({previous}: that process is gone)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_text().encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiting opener then sees another inode
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
