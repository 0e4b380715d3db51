"""The one writer of output folders (a curated set, upscaled images, an exported model): a folder belongs to
one command, records what it holds, and after a rerun holds exactly the new result.

The folder's `fractalpre-output.json` names the command that owns it, the fingerprint of what made its result
(util.provenance) and every file it wrote, each with a signature of the input it came from (its size and
modification time). A rerun of the same command with an equal fingerprint continues: an output whose input is
unchanged is kept, so a stopped run finishes and an unchanged one does nothing. Another fingerprint is
refused, naming what changed, unless `replace`, which removes the old result first. A folder holding
anything else (a training workdir, a dataset, a user's files, another command's output) is never written
into. Names claimed twice are refused, naming both inputs. A finished run removes the files of the old
result that the new one does not hold.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fractalpre.util import provenance
from fractalpre.util.files import FolderLock, check_folder, is_lock, is_temporary, write_atomic
from fractalpre.util.usage import UsageError

MANIFEST = provenance.OUTPUT_MANIFEST


def owner(folder: str | os.PathLike) -> str | None:
  """What owns an existing folder: "COMMAND's output", 'a training workdir' (its config.json beside
  checkpoints, metrics or a fingerprint), 'a dataset' (what `fractalpre generate` writes), or None."""
  folder = Path(folder)
  record = _read(folder)
  if record is not None:
    return f"{record.get('command', 'another command')}'s output"
  if (folder / "config.json").is_file() and any((folder / name).exists() for name in
                                                ("checkpoints", "metrics.jsonl", provenance.FILE)):
    return "a training workdir"
  try:
    if "fractalpre_version" in json.loads((folder / "manifest.json").read_text()):
      return "a dataset"
  except (OSError, ValueError, TypeError):
    pass
  return None


def _read(folder: Path) -> dict | None:
  try:
    record = json.loads((folder / MANIFEST).read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def signature(path: str | os.PathLike) -> str:
  """An input's size and modification time: an output made from it is redone when either changes."""
  st = os.stat(path)
  return f"{st.st_size} {st.st_mtime_ns}"


class OutputFolder:
  """`with OutputFolder(out, command, record, replace) as folder:` then `folder.claim(name, source)` for each
  output (a relative path; raises on a name claimed twice), `folder.begin()`, write each output whose
  `folder.fresh(name)` is False, and `folder.finish()`."""

  def __init__(self, folder: str | os.PathLike, command: str, record: dict, replace: bool = False,
               flag: str = "--out"):
    self.folder, self.command, self.record, self.replace, self.flag = Path(folder), command, record, replace, flag
    self.claimed: dict[str, str] = {}  # name -> the input it comes from
    self.signatures: dict[str, str] = {}  # name -> its input's signature
    self.old: dict[str, str | None] = {}  # the old result: name -> its input's signature
    self.reusable = False
    self.lock = None

  def __enter__(self) -> OutputFolder:
    check_folder(self.folder, self.flag)
    if self.folder.is_dir():
      self._check_owner()  # before locking: a running trainer's workdir is not "in use by another curate"
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
      files = sorted(p.name for p in self.folder.iterdir() if not (is_lock(p.name) or is_temporary(p.name)))
      if what or files:
        raise UsageError(f"{self.flag} {self.folder} holds {what or 'files'} ({', '.join(files[:3])}"
                         f"{', ...' if len(files) > 3 else ''}) and no record that {self.command} wrote "
                         f"{'it' if what else 'them'}; give a new or empty folder")
      return
    if old.get("command") != self.command:
      raise UsageError(f"{self.flag} {self.folder} holds {old.get('command')}'s output; give another folder")
    self.old = {name: sig for name, sig in old.get("files", {}).items() if self._inside(name)}
    changed = provenance.differences(old.get("fingerprint", {}), self.record)
    if changed and not self.replace:
      raise UsageError(f"{self.flag} {self.folder} holds the result of another {self.command} "
                       f"({'; '.join(changed)}); add --replace to replace it, or give another folder")
    if changed:
      self._remove(sorted(self.old))  # the old result goes before any of the new is written
      self.old = {}
    self.reusable = not changed

  def _inside(self, name: str) -> bool:
    return not (Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST)

  def claim(self, name: str | os.PathLike, source: str = "", input_signature: str | None = None) -> Path:
    """The path to write output `name` (relative to the folder) at. `source` names the input it comes from,
    for the one-line error when two inputs claim one name; `input_signature` (see `signature`) decides
    whether an output already there is fresh."""
    name = Path(name).as_posix()
    if name in self.claimed:
      raise UsageError(f"{self.claimed[name] or 'an input'} and {source or 'another input'} would both be "
                       f"written to {self.folder / name}; rename one of them")
    if not self._inside(name):
      raise UsageError(f"{source or name}: {name!r} is not a name inside {self.flag} {self.folder}")
    self.claimed[name] = source
    self.signatures[name] = input_signature
    return self.folder / name

  def fresh(self, name: str | os.PathLike) -> bool:
    """Whether output `name` is already there from this result, made from the same input."""
    name = Path(name).as_posix()
    path = self.folder / name
    return (self.reusable and name in self.old and self.old[name] == self.signatures.get(name)
            and (path.exists() or path.is_symlink()))

  def begin(self) -> None:
    """Removes the outputs that are not fresh (made from another input), then records, before any file is
    written, every name the folder may hold: a stopped run leaves nothing a later run does not know of, and
    every claimed output that exists afterwards was made from the input it records."""
    for name in self.claimed:
      if not self.fresh(name):
        (self.folder / name).unlink(missing_ok=True)
    self._write({**{n: s for n, s in self.old.items() if n not in self.claimed}, **self.signatures})

  def finish(self) -> int:
    """Removes the old result's files that the new one does not hold and records the new result; returns
    how many were removed."""
    stale = sorted(set(self.old) - set(self.claimed))
    self._remove(stale)
    self._write(dict(self.signatures))
    return len(stale)

  def _remove(self, names: list[str]) -> None:
    """Unlinks these outputs, then the folders that removing them left empty (never the user's others)."""
    for name in names:
      path = self.folder / name
      path.unlink(missing_ok=True)
      for parent in path.parents:
        if parent == self.folder or not parent.is_relative_to(self.folder):
          break
        try:
          parent.rmdir()
        except OSError:  # not empty
          break

  def _write(self, files: dict[str, str | None]) -> None:
    """The record, rewritten only when it changes: a rerun with nothing to do leaves the folder untouched."""
    text = json.dumps({"command": self.command, "fingerprint": self.record, "files": dict(sorted(files.items()))},
                      indent=1) + "\n"
    path = self.folder / MANIFEST
    if not (path.exists() and path.read_text() == text):
      write_atomic(path, text)

  def __exit__(self, *exc) -> None:
    self.lock.release()
