"""What made a result, and whether it may be reused: the one fingerprint mechanism of the package.

A fingerprint is the resolved config (a nested dict), a content digest of every input that was read (a
checkpoint's step and a digest of its parameters, a score table's bytes, an image folder's listing) and the
package version. Every result that is reused records one: a training workdir (a finished or resumed run, a
probe, a study cell) in `provenance.json`, an output folder (curated, upscaled, exported) in its
`fractalpre-output.json`. It is reused only while a fresh fingerprint of what it would be made from is
equal; `differences` names what changed, for the caller to recompute or refuse.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fractalpre.util.files import is_lock, is_temporary, write_atomic

FILE = "provenance.json"  # a training workdir's record
OUTPUT_MANIFEST = "fractalpre-output.json"  # an output folder's record (util.output_folder)
_CHUNK = 1 << 20


def flatten(tree, prefix: str = "") -> dict:
  """{dotted key: value} of a nested config (a ConfigDict, or the dict of its JSON)."""
  out = {}
  for k, v in tree.items():
    if hasattr(v, "items"):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def file_digest(path: str | os.PathLike) -> str:
  """sha256 of a file's bytes (a score table, a config): any edit changes it, a touch does not."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()[:16]


def listing_digest(folder: str | os.PathLike) -> str:
  """sha256 of a folder's listing: every file's relative path, size and modification time, hidden names,
  locks, temporary files and an output folder's own record left out. Cheap for large image folders, and
  changed by any added, removed, renamed or rewritten file."""
  folder = Path(folder)
  h = hashlib.sha256()
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if name.startswith(".") or is_lock(name) or is_temporary(name) or name == OUTPUT_MANIFEST:
        continue
      path = Path(root) / name
      st = path.stat()
      h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


def arrays_digest(named_arrays) -> str:
  """sha256 of (name, dtype, shape, bytes) of every array in `named_arrays` [(name, array-like), ...], in
  the given order: parameters that differ in any bit, shape or dtype differ here."""
  import numpy as np
  h = hashlib.sha256()
  for name, value in named_arrays:
    a = np.ascontiguousarray(np.asarray(value))
    h.update(f"{name}\0{a.dtype.str}\0{a.shape}\n".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def fingerprint(config: dict, inputs: dict[str, str] | None = None) -> dict:
  """The record of what makes a result: the resolved config (JSON-able), {input name: its digest}, the
  package version."""
  from fractalpre import __version__
  return {"version": __version__, "config": json.loads(json.dumps(config)), "inputs": dict(inputs or {})}


def differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
  """What differs between two fingerprints, each as 'what: old -> new', sorted; config keys in `ignore` (and
  keys added since `old` was made that are not set or off) do not count. Empty: the result may be reused."""
  missing = object()
  show = lambda v: "(absent)" if v is missing else json.dumps(v)
  out = []
  if old.get("version", missing) != new.get("version", missing):
    out.append(f"package version: {show(old.get('version', missing))} -> {show(new.get('version', missing))}")
  a_cfg, b_cfg = flatten(old.get("config") or {}), flatten(new.get("config") or {})
  for key in sorted(set(a_cfg) | set(b_cfg)):
    a, b = a_cfg.get(key, missing), b_cfg.get(key, missing)
    if a is missing and (b is None or b is False):
      continue
    if a != b and key not in ignore:
      out.append(f"{key}: {show(a)} -> {show(b)}")
  a_in, b_in = old.get("inputs") or {}, new.get("inputs") or {}
  for name in sorted(set(a_in) | set(b_in)):
    a, b = a_in.get(name, missing), b_in.get(name, missing)
    if a != b:
      out.append(f"{name}: {show(a)} -> {show(b)}")
  return out


def read(folder: str | os.PathLike) -> dict | None:
  """The fingerprint recorded in a folder; None when there is none or it cannot be read (a result without
  a readable record is never reused)."""
  try:
    record = json.loads((Path(folder) / FILE).read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def write(folder: str | os.PathLike, record: dict) -> None:
  write_atomic(Path(folder) / FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
