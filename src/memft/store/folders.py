"""An adapter folder as a small store: one writer at a time (a lock), and a crash-proof swap of whole versions.

- `locked(folder)`: an exclusive lock held for a whole read-modify-write (write, append, forget). The lock file is
  a sibling (`.NAME.memft-lock`), since the folder itself is swapped. It is an OS lock (flock through the
  `filelock` library), so a killed holder releases it at once and no stale lock can block later commands.
- `swap_in(folder, fill)`: fill a fresh sibling, fsync it, then rename the old version away and the new one in.
  A crash between the two renames leaves the old version under a recognisable name; `recover` (run under the lock
  by every writer and by every reader that finds the folder missing) puts it back, and removes leftovers.
- Files a user keeps in the folder that the new version does not write itself (notes, the demo's records) are
  carried over to the new version.
- `resolve(folder)`: the one real path every entry point works on (a symlinked alias locks the same file and the
  swap renames the real folder, never the link; `--out .` locks `../.NAME.memft-lock`, outside the folder).
- `read_consistent(folder, names)`: readers take no lock (a writer holds it for minutes of training); every save
  makes a new folder (a new inode), so files read between two identical stats of the folder are one version.
- `tidy(folder)`: readers clean what an interrupted save left, under the lock when nobody else holds it.

Sibling names: `.NAME.memft-tmp-<hex>` (being filled), `.NAME.memft-old-<hex>` (the previous version during a
swap). Names written by memft 0.1 (`.NAME.tmp-XXXXXXXX`, `.NAME.old-PID`) are recognised too.

Core layer: may import other core modules only; the memory store, checks, research tools, integrations and the CLI build on it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from memft.errors import AdapterError

# Written by every save itself: never carried over from the previous version (an old `.bin` beside a new
# `.safetensors` would be a second, stale set of weights).
OWN_FILES = frozenset({"adapter_model.safetensors", "adapter_model.bin", "adapter_config.json", "memft.json", "ledger.json", "README.md"})
LOCK_SUFFIX = ".memft-lock"
DEFAULT_WAIT = 600.0  # seconds a writer waits for another one on the same folder before giving up (exit 2)
WAIT_ENV = "MEMFT_LOCK_WAIT"  # overrides DEFAULT_WAIT (seconds; < 0: wait forever)


def default_wait() -> float:
    text = os.environ.get(WAIT_ENV)
    if text is None:
        return DEFAULT_WAIT
    try:
        return float(text)
    except ValueError:
        raise AdapterError(f"{WAIT_ENV}={text!r}: give a number of seconds (negative: wait forever)") from None


def resolve(folder: str | Path) -> Path:
    """The real, absolute path of an adapter folder (symlinks followed, `.` and `..` removed): every command works
    on this one, so aliases of one folder share its lock and its swaps.

    >>> resolve("/a/b/../c/.").as_posix()
    '/a/c'
    """
    return Path(os.path.realpath(os.path.abspath(folder)))


def lock_path(folder: Path) -> Path:
    folder = resolve(folder)
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def check_location(folder: str | Path) -> Path:
    """The resolved folder, after refusing a location that cannot hold one: a path under a file (`--out notes.txt/sub`)
    or the filesystem root. -> resolve(folder)."""
    real = resolve(folder)
    if real.parent == real:
        raise AdapterError(f"{folder}: the filesystem root cannot be an adapter folder; give a folder inside it")
    for anc in real.parents:
        if anc.exists():
            if not anc.is_dir():
                raise AdapterError(f"{folder}: {anc} is a file, not a folder; give a location inside a folder")
            break
    return real


def _say(msg: str) -> None:
    sys.stderr.write(f"memft: {msg}\n")
    sys.stderr.flush()


@contextmanager
def locked(folder: str | Path, wait: float | None = None, notify: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold the folder's exclusive lock. Another holder: say so once (`notify`), wait up to `wait` seconds (default
    DEFAULT_WAIT or $MEMFT_LOCK_WAIT; < 0: forever), then raise AdapterError. Recovers an interrupted swap once the lock is held."""
    from filelock import FileLock, Timeout

    folder = check_location(folder)
    key = str(folder)
    if key in _HELD:  # already ours (a save inside a write): flock is per open file, so never take it twice
        yield
        return
    wait = default_wait() if wait is None else wait
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path(folder)))
        try:
            lock.acquire(timeout=0, blocking=False)
        except Timeout:
            if wait == 0:
                raise AdapterError(f"{folder}: another memft process is using it; nothing was changed; run again when it has finished") from None
            notify(f"{folder}: another memft process is writing it; waiting for it to finish"
                   + ("" if wait < 0 else f" (at most {wait:.0f} s)"))
            try:
                lock.acquire(timeout=wait)
            except Timeout:
                raise AdapterError(f"{folder}: another memft process held it for {wait:.0f} s; nothing was changed; "
                                   "run again when it has finished") from None
    except OSError as e:
        raise AdapterError(f"{folder}: cannot lock it ({e.strerror or e}); choose a writable location for the adapter") from None
    _HELD.add(key)
    try:
        recover(folder)
        yield
    finally:
        _HELD.discard(key)
        lock.release()


_HELD: set[str] = set()  # folders whose lock this process holds


_LEFTOVER = r"(memft-(tmp|old)-[0-9a-f]{32}|tmp-[A-Za-z0-9_]{8}|old-\d+)"


def leftovers(folder: Path) -> dict[str, list[Path]]:
    """Siblings left by interrupted saves: {"tmp": [...], "old": [...]} (half-filled / previous versions)."""
    folder = resolve(folder)
    pat = re.compile(rf"^\.{re.escape(folder.name)}\.{_LEFTOVER}$")
    found: dict[str, list[Path]] = {"tmp": [], "old": []}
    if not folder.parent.is_dir():
        return found
    for p in folder.parent.iterdir():
        m = pat.match(p.name)
        if m and p.is_dir():
            found["old" if "old-" in m.group(1) else "tmp"].append(p)
    return found


def recover(folder: Path) -> str | None:
    """Finish what an interrupted save left (call with the lock held): put the previous version back when the
    folder is missing, then remove leftovers. -> a line saying what was restored, or None."""
    folder = resolve(folder)
    left = leftovers(folder)
    said = None
    if not folder.exists() and left["old"]:
        newest = max(left["old"], key=lambda p: p.stat().st_mtime)
        os.replace(newest, folder)
        _fsync_dir(folder.parent)
        left["old"].remove(newest)
        said = f"{folder}: restored the previous version left by an interrupted save"
        _say(said)
    for p in left["old"] + left["tmp"]:
        shutil.rmtree(p, ignore_errors=True)
    return said


def recover_for_reading(folder: Path) -> None:
    """What a reader does before reading: a folder missing with a previous version beside it is put back (waiting
    for a writer that holds the lock); other leftovers of an interrupted save are removed when no other process
    holds the lock (a writer's own half-filled sibling is never touched). A location it cannot lock (read-only
    media) is read as it is."""
    folder = resolve(folder)
    left = leftovers(folder)
    if not left["old"] and not left["tmp"]:
        return
    try:
        with locked(folder, wait=None if not folder.exists() and left["old"] else 0, notify=lambda msg: None):
            pass
    except AdapterError:
        pass


tidy = recover_for_reading

READ_TRIES = 20  # rereads of a folder that changed while it was read (each save changes it once)


def read_consistent(folder: str | Path, names: Sequence[str], tries: int = READ_TRIES) -> dict[str, bytes | None]:
    """The bytes of the files `names` in `folder` (None: missing), all of one version: the folder's (device, inode)
    is the same before and after reading them, and every save swaps in a new folder. Read again when a save came
    in between; a folder missing for a moment (between a swap's two renames) is waited for."""
    folder = resolve(folder)
    for attempt in range(tries):
        try:
            before = os.stat(folder)
            out = {n: _read_or_none(folder / n) for n in names}
            after = os.stat(folder)
        except FileNotFoundError:
            time.sleep(0.05 * (attempt + 1))
            continue
        if (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino):
            return out
        time.sleep(0.01 * (attempt + 1))
    if not folder.exists():
        raise AdapterError(f"{folder}: no such adapter folder; give the --out folder of `memft write`")
    raise AdapterError(f"{folder}: it changed {tries} times while being read (other memft processes keep saving it); run again")


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise AdapterError(f"{path}: a folder where memft keeps a file; the adapter is damaged, write it again") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the renames are still atomic
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk (before the rename that makes them visible)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def carry_over(old: Path, new: Path) -> list[str]:
    """Copy into `new` what the user kept in `old` that the new version does not write itself -> the names."""
    from memft.store.shards import own_name

    names = []
    for p in sorted(old.iterdir()):
        if p.name in OWN_FILES or own_name(p.name) or (new / p.name).exists() or p.name.startswith(".memft.json.tmp-"):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, new / p.name, symlinks=True)
        else:
            shutil.copy2(p, new / p.name, follow_symlinks=False)
        names.append(p.name)
    return names


def _between_renames() -> None:
    """A seam for the crash tests: they make it kill the process between the two renames."""


def swap_in(folder: str | Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh sibling, carry the user's files over, fsync, and swap it in (call with the lock held).

    Readers see the old version or the new one. An exception (Ctrl-C included) before the swap leaves the folder
    untouched; a crash between the renames is undone by `recover`.
    """
    folder = resolve(folder)
    tmp = folder.with_name(f".{folder.name}.memft-tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        fill(tmp)
        if folder.is_dir():
            carry_over(folder, tmp)
        fsync_tree(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise AdapterError(f"{folder}: cannot save the adapter ({why}); the folder keeps its previous version; "
                               "free space or choose another --out") from None
        raise
    if not folder.exists():
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
        return
    old = folder.with_name(f".{folder.name}.memft-old-{uuid.uuid4().hex}")
    os.replace(folder, old)
    try:
        _between_renames()
        os.replace(tmp, folder)
    except BaseException:
        if not folder.exists():
            os.replace(old, folder)  # put the previous version back before anything else
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
