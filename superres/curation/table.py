"""Score tables: CSV or Parquet by file extension, written atomically, read back with their types."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from fractalpre import util

FORMATS = (".csv", ".parquet")
TEXT_COLUMNS = {"path", "format", "phash", "note", "error", "reason"}  # never parsed as numbers


def _check(path: Path) -> None:
  if path.suffix not in FORMATS:
    raise ValueError(f"a score table must end in {' or '.join(FORMATS)}, got {path.name!r}")


def _parse(value: str):
  if value == "":
    return None
  for kind in (int, float):
    try:
      return kind(value)
    except ValueError:
      pass
  if value in ("True", "False"):
    return value == "True"
  return value


def write(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
  """Writes rows (missing keys empty) atomically (fractalpre.util)."""
  path = Path(path)
  _check(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with util.atomic_path(path) as tmp:
    if path.suffix == ".csv":
      with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
          writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                           for k, v in row.items()})
    else:
      import pyarrow as pa
      import pyarrow.parquet as pq
      pq.write_table(pa.table({c: [_plain(row.get(c)) for row in rows] for c in columns}), tmp)


def _plain(v):
  return None if isinstance(v, float) and math.isnan(v) else (str(v) if isinstance(v, int) and v >= 2**63 else v)


def read(path: str | os.PathLike) -> list[dict]:
  path = Path(path)
  _check(path)
  if not path.exists():
    raise FileNotFoundError(f"score table {path} does not exist")
  if path.suffix == ".csv":
    with open(path, newline="") as f:
      return [{k: (v or None) if k in TEXT_COLUMNS else _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
  import pyarrow.parquet as pq
  return pq.read_table(path).to_pylist()
