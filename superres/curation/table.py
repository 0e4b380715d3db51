"""Score tables: CSV or Parquet by file extension, written atomically, read back with their types."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from fractalpre import util

FORMATS = (".csv", ".parquet")
TEXT_COLUMNS = {"path", "root", "format", "phash", "note", "error", "reason"}  # never parsed as numbers


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


def read(path: str | os.PathLike, required: tuple[str, ...] = ("path",)) -> list[dict]:
  """The rows of a score table, each checked: a row cut short or too long (what a kill or a full disk
  leaves, or a hand edit), a missing `required` column or an empty path is a ValueError naming the file,
  the line and the column."""
  path = Path(path)
  _check(path)
  if not path.exists():
    raise FileNotFoundError(f"score table {path} does not exist")
  if path.suffix == ".csv":
    with open(path, newline="") as f:
      reader = csv.DictReader(f)
      header = reader.fieldnames or []
      _check_columns(path, header, required)
      rows = []
      for row in reader:
        line = reader.line_num
        if None in row:
          raise ValueError(f"score table {path}, line {line}: more fields than the header's {len(header)}")
        short = [k for k, v in row.items() if v is None]
        if short:
          raise ValueError(f"score table {path}, line {line}: no {short[0]!r} (the row is cut short; "
                           "`superres score` rewrites the table)")
        rows.append({k: (v or None) if k in TEXT_COLUMNS else _parse(v) for k, v in row.items()})
  else:
    import pyarrow
    import pyarrow.parquet as pq
    try:
      data = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:
      raise ValueError(f"score table {path} cannot be read as Parquet ({' '.join(str(e).split())[:80]})") from None
    _check_columns(path, data.column_names, required)
    rows = data.to_pylist()
  if "path" in required:
    for line, row in enumerate(rows, start=2):
      if not row.get("path"):
        raise ValueError(f"score table {path}, {'line' if path.suffix == '.csv' else 'row'} "
                         f"{line if path.suffix == '.csv' else line - 1}: the 'path' column is empty")
  return rows


def _check_columns(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
  missing = [c for c in required if c not in columns]
  if missing:
    raise ValueError(f"score table {path} has no {missing[0]!r} column (it has {', '.join(columns) or 'none'})")
