"""The one writer of output folders (a curated set, upscaled images, an exported model): a folder belongs to
one command, records what it holds, and after a rerun holds exactly the new result.

The folder's `fractalpre-output.json` names the command that owns it, the fingerprint of what made its result
(util.provenance) and every file it wrote. A rerun of the same command with an equal fingerprint continues
(files already there are reused, so a stopped run finishes); with another fingerprint it is refused, naming
what changed, unless `replace`, which removes the old result first. A folder holding anything else (a
training workdir, a dataset, a user's files, another command's output) is never written into. Names the
caller claims twice are refused, naming both inputs. A finished run removes the files of the old result
that the new one does not hold.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fractalpre.util import provenance
from fractalpre.util.files import FolderLock, check_folder, is_lock, is_temporary, write_atomic
from fractalpre.util.usage import UsageError

MANIFEST = "fractalpre-output.json"
# What marks a folder as another command's: a training workdir, a dataset `fractalpre generate` wrote.
_OWNED_BY = (("checkpoints", "a training workdir"), ("metrics.jsonl", "a training workdir"),
             (provenance.FILE, "a training workdir"), ("manifest.json", "a dataset"))


def owner(folder: str | os.PathLike) -> str | None:
  """What owns an existing folder: 'COMMAND's output', 'a training workdir', 'a dataset', or None."""
  folder = Path(folder)
  record = _read(folder)
  if record is not None:
    return f"{record.get('command', 'another command')}'s output"
  for name, what in _OWNED_BY:
    if (folder / name).exists():
      return what
  return None


def _read(folder: Path) -> dict | None:
  try:
    record = json.loads((folder / MANIFEST).read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _user_files(folder: Path) -> list[str]:
  return sorted(p.name for p in folder.iterdir() if not (is_lock(p.name) or is_temporary(p.name)))


class OutputFolder:
  """`with OutputFolder(out, command, record, replace) as folder:` then `folder.claim(name, source)` for each
  output (a relative path; raises on a name claimed twice), write the files, and `folder.finish()`. Inside,
  `folder.reusable` says whether files already there may be kept (same command, equal fingerprint)."""

  def __init__(self, folder: str | os.PathLike, command: str, record: dict, replace: bool = False,
               flag: str = "--out"):
    self.folder, self.command, self.record, self.replace, self.flag = Path(folder), command, record, replace, flag
    self.claimed: dict[str, str] = {}
    self.previous: set[str] = set()
    self.reusable = False
    self.lock = None

  def __enter__(self) -> OutputFolder:
    check_folder(self.folder, self.flag)
    self.folder.mkdir(parents=True, exist_ok=True)
    self.lock = FolderLock(self.folder, self.command).acquire()
    try:
      self._check_owner()
    except BaseException:
      self.lock.release()
      raise
    return self

  def _check_owner(self) -> None:
    old = _read(self.folder)
    if old is None:
      what = owner(self.folder)
      files = _user_files(self.folder)
      if what or files:
        raise UsageError(f"{self.flag} {self.folder} holds {what or 'files'} that {self.command} did not write "
                         f"({', '.join(files[:3])}{', ...' if len(files) > 3 else ''}); give a new or empty folder")
      return
    if old.get("command") != self.command:
      raise UsageError(f"{self.flag} {self.folder} holds {old.get('command')}'s output; give another folder")
    self.previous = set(old.get("files", []))
    changed = provenance.differences(old.get("fingerprint", {}), self.record)
    if changed and not self.replace:
      raise UsageError(f"{self.flag} {self.folder} holds the result of another {self.command} "
                       f"({'; '.join(changed)}); add --replace to replace it, or give another folder")
    if changed:
      for name in sorted(self.previous):  # the old result goes before any of the new is written
        (self.folder / name).unlink(missing_ok=True)
      self._prune_empty_folders()
      self.previous = set()
    self.reusable = not changed

  def claim(self, name: str | os.PathLike, source: str = "") -> Path:
    """The path to write output `name` (relative to the folder) at; `source` names the input it comes from,
    for the one-line error when two inputs claim one name."""
    name = Path(name).as_posix()
    if name in self.claimed:
      raise UsageError(f"{self.claimed[name] or 'an input'} and {source or 'another input'} would both be "
                       f"written to {self.folder / name}; rename one of them")
    if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST:
      raise UsageError(f"{source or name}: {name!r} is not a name inside {self.flag} {self.folder}")
    self.claimed[name] = source
    return self.folder / name

  def begin(self) -> None:
    """Records, before any file is written, every name the folder may hold (the old result's and the new),
    so that a stopped run leaves nothing a later run does not know of."""
    self._write(sorted(self.previous | set(self.claimed)), complete=False)

  def finish(self) -> int:
    """Removes the old result's files that the new one does not hold and records the new result; returns
    how many were removed."""
    stale = sorted(self.previous - set(self.claimed))
    for name in stale:
      (self.folder / name).unlink(missing_ok=True)
    self._prune_empty_folders()
    self._write(sorted(self.claimed), complete=True)
    return len(stale)

  def _write(self, files: list[str], complete: bool) -> None:
    write_atomic(self.folder / MANIFEST, json.dumps({"command": self.command, "complete": complete,
                                                     "fingerprint": self.record, "files": files}, indent=1) + "\n")

  def _prune_empty_folders(self) -> None:
    for root, dirs, files in os.walk(self.folder, topdown=False):
      if Path(root) != self.folder and not os.listdir(root):
        os.rmdir(root)

  def __exit__(self, *exc) -> None:
    self.lock.release()
