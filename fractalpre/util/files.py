"""Files nobody sees half-written and folders owned by one job (shared by fractalpre and superres, so that
each guarantee is written, and fixed, once)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path

from fractalpre.util.usage import UsageError

TEMPORARY_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"


def temporary_name(path: str | os.PathLike) -> Path:
  """The fixed temporary name of `path` in the same folder, so a retry after a kill overwrites it."""
  path = Path(path)
  return path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")


def is_temporary(name: str) -> bool:
  return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


def is_lock(name: str) -> bool:
  return name.startswith(".") and name.endswith(LOCK_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
  """Yields a temporary path to write `path` through; renames it into place only if the block succeeds,
  and removes it otherwise. Readers see the old file or the whole new one, never a part."""
  path = Path(path)
  tmp = temporary_name(path)
  if tmp.exists() or tmp.is_symlink():  # a killed attempt's leftover
    tmp.unlink()
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.exists() or tmp.is_symlink():
      tmp.unlink()


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)


def check_writable(path: str | os.PathLike, flag: str) -> None:
  """Refuses, before any work is done, a file path that cannot be written: its folder is a file, is
  missing and cannot be created, or is read-only; or the path is a folder."""
  path = Path(path)
  if path.is_dir():
    raise UsageError(f"{flag} {path} is a folder; give a file name")
  _check_creatable(path, path.parent, flag)


def check_folder(folder: str | os.PathLike, flag: str) -> None:
  """Refuses a folder that is a file, or that cannot be created or written; creates nothing."""
  folder = Path(folder)
  if folder.exists() and not folder.is_dir():
    raise UsageError(f"{flag} {folder} exists and is not a folder")
  _check_creatable(folder, folder, flag)


def _check_creatable(target: Path, start: Path, flag: str) -> None:
  """The nearest existing folder at or above `start` must be a folder we can write in: there `target`
  (or the folders leading to it) will be created. A probe file is created and removed, since permission
  bits alone miss read-only mounts and root."""
  ancestor = start
  while not ancestor.exists():
    ancestor = ancestor.parent
  if not ancestor.is_dir():
    raise UsageError(f"{flag} {target} cannot be created: {ancestor} is not a folder")
  try:
    fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".write-probe-")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise UsageError(f"{flag} {target} is not writable ({ancestor}: {e.strerror or e})") from None


class FolderLock:
  """An exclusive lock on a folder (or one part of it, by `part`) for one job: `flock` on FOLDER/.lock or
  FOLDER/.PART.lock, which holds the owner's pid. The kernel drops it when the owner exits, even by
  SIGKILL, so a killed job never leaves it held."""

  def __init__(self, folder: str | os.PathLike, job: str, part: str = ""):
    self.path = Path(folder) / (f".{part}{LOCK_SUFFIX}" if part else LOCK_SUFFIX)
    self.job, self.fd = job, None

  def acquire(self) -> FolderLock:
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES):
          raise
        owner = self.path.read_text().strip() if self.path.exists() else ""
        raise UsageError(f"{self.path.parent} is in use by another {self.job} (pid {owner or 'unknown'}, holding "
                         f"{self.path.name}); wait for it to finish or use another folder") from None
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)  # the owner removed the file as we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self.fd = fd
    return self

  def release(self) -> None:
    """Removes the lock file, then unlocks: a finished job leaves nothing behind."""
    if self.fd is not None:
      self.path.unlink(missing_ok=True)
      os.close(self.fd)  # closing drops the flock
      self.fd = None

  def __enter__(self) -> FolderLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


# errno values of a full disk, a full quota and a file-size limit; TensorStore reports them in its messages
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_SPACE_TEXT = tuple(f"os_error_code='{code}'" for code in _NO_SPACE) + ("No space left on device",
                                                                            "File too large", "Disk quota exceeded")


def is_out_of_space(error: BaseException | str | None) -> bool:
  """Whether an error (or any error in its chain, or a log message) says the disk, a quota or a file-size
  limit ran out; TensorStore (orbax) and Python report it differently."""
  seen = set()
  while isinstance(error, BaseException) and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
      return True
    if any(text in str(error) for text in _NO_SPACE_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return isinstance(error, str) and any(text in error for text in _NO_SPACE_TEXT)


def free_space(folder: str | os.PathLike) -> str:
  """The free space on a folder's disk, for messages ('1.2 GB free', or 'free space unknown')."""
  import shutil
  try:
    free = shutil.disk_usage(folder).free
  except OSError:
    return "free space unknown"
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if free < 1000 or unit == "TB":
      return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
    free /= 1000
