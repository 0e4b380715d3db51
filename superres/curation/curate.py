"""Keep or drop every scored image, with its reason; quantile strata; near-duplicate removal; outputs.

Decisions are rows of the score table plus `keep` (bool), `reason` (empty when kept, else every failed
rule, '; '-joined) and `stratum` (0 .. K-1 by quantiles of a score among kept images, when asked).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from fractalpre import util
from superres.curation import dedup, table
from superres.curation.metrics import hamming

LINKS = ("copy", "symlink", "hardlink")


def _num(v) -> float:
  return float("nan") if v is None or v == "" else float(v)


def decide(rows: list[dict], min_segments: float | None = None, max_blockiness: float | None = None,
           min_quality: float | None = None, min_megapixels: float | None = None, dedup_threshold: int | None = None) -> list[dict]:
  """Applies the rules; a JPEG-quality rule ignores non-JPEG files (they have no quantisation tables);
  an undefined blockiness (flat image) fails a max_blockiness rule. Near-duplicates keep the largest copy
  (pixels, then bytes, then path) of each group among the images that passed the other rules."""
  out = []
  for row in rows:
    reasons = []
    if row.get("error"):
      reasons.append(f"error: {row['error']}")
    else:
      if min_segments is not None and not _num(row.get("segments")) >= min_segments:
        reasons.append(f"segments {row.get('segments')} < {min_segments:g}")
      if max_blockiness is not None and not _num(row.get("blockiness")) <= max_blockiness:
        b = _num(row.get("blockiness"))
        reasons.append("blockiness undefined (flat image)" if math.isnan(b) else f"blockiness {b:.1f} > {max_blockiness:g}")
      if min_quality is not None and row.get("jpeg_quality") is not None and _num(row["jpeg_quality"]) < min_quality:
        reasons.append(f"jpeg quality {_num(row['jpeg_quality']):g} < {min_quality:g}")
      if min_megapixels is not None and not _num(row.get("megapixels")) >= min_megapixels:
        reasons.append(f"megapixels {_num(row.get('megapixels')):.3f} < {min_megapixels:g}")
    out.append({**row, "keep": not reasons, "reason": "; ".join(reasons), "stratum": None})
  if dedup_threshold is not None:
    kept = [d for d in out if d["keep"] and d.get("phash")]
    hashes = [int(str(d["phash"]), 16) for d in kept]
    for group in dedup.groups(hashes, dedup_threshold):
      members = sorted((kept[i] for i in group),
                       key=lambda d: (-_num(d.get("megapixels")), -_num(d.get("size_bytes")), d["path"]))
      keeper = int(str(members[0]["phash"]), 16)
      for d in members[1:]:
        d["keep"] = False
        d["reason"] = (f"near-duplicate of {members[0]['path']} "
                       f"(hamming {hamming(keeper, int(str(d['phash']), 16))})")
  return out


def stratify(decisions: list[dict], column: str, k: int) -> None:
  """Sets `stratum` of kept rows to their quantile bin (0 .. k-1) of `column`; equal values share a bin."""
  if k < 1:
    raise ValueError(f"strata must be >= 1, got {k}")
  kept = [d for d in decisions if d["keep"] and not math.isnan(_num(d.get(column)))]
  if not kept:
    return
  values = np.array([_num(d[column]) for d in kept])
  edges = np.quantile(values, np.linspace(0, 1, k + 1)[1:-1])
  for d, v in zip(kept, values):
    d["stratum"] = int(np.searchsorted(edges, v, side="right"))


MANIFEST_COLUMNS = ["path", "keep", "reason", "stratum"]
MANIFEST_SUFFIXES = (".csv", ".parquet", ".json")


def write_manifest(decisions: list[dict], path: str | os.PathLike, columns: list[str]) -> None:
  path = Path(path)
  if path.suffix == ".json":
    util.write_atomic(path, json.dumps([{c: d.get(c) for c in MANIFEST_COLUMNS + columns} for d in decisions],
                                         indent=1))
  else:
    table.write(path, decisions, MANIFEST_COLUMNS + [c for c in columns if c != "path"])


def output_names(decisions: list[dict]) -> list[tuple[dict, str]]:
  """(decision, name in the output folder) of every kept image: its path relative to the folder it was
  scored under (prefixed stratum_K/ when stratified), so two images never share a name. A row outside that
  folder (a hand-edited table) or without it (a table of an older `superres score`) is refused: curate copies
  only what it scored."""
  out = []
  for d in decisions:
    if not d["keep"]:
      continue
    if not d.get("root"):
      raise util.UsageError(f"the score table has no root folder for {d['path']} (written by an older superres "
                            "score); score the folder again: unchanged rows are reused")
    try:
      name = Path(d["path"]).relative_to(d["root"])
    except ValueError:
      raise util.UsageError(f"the score table lists {d['path']}, which is outside the folder it scored "
                            f"({d['root']}); curate copies only files under that folder") from None
    if ".." in name.parts:
      raise util.UsageError(f"the score table lists {d['path']}, which leaves the folder it scored ({d['root']})")
    stratum = d.get("stratum")
    out.append((d, (f"stratum_{stratum}/" if stratum is not None else "") + name.as_posix()))
  return out


def write_folder(decisions: list[dict], folder: util.OutputFolder, link: str = "copy") -> int:
  """Kept images into the output folder (util.OutputFolder) at their names from `output_names`, each placed
  atomically; images a stopped run of the same curation placed already, from unchanged files, are kept.
  Returns how many."""
  if link not in LINKS:
    raise ValueError(f"link must be one of {LINKS}, got {link!r}")
  named = []
  for d, name in output_names(decisions):
    try:
      signature = util.output_folder.signature(d["path"])
    except OSError as e:
      raise util.UsageError(f"{d['path']} was scored but cannot be read now ({e.strerror or e}); score the "
                            "folder again") from None
    named.append((Path(d["path"]), name, folder.claim(name, d["path"], signature)))
  folder.begin()
  for src, name, dst in named:
    if folder.fresh(name):
      continue
    dst.parent.mkdir(parents=True, exist_ok=True)
    with util.atomic_path(dst) as tmp:
      if link == "copy":
        shutil.copy2(src, tmp)
      elif link == "symlink":
        tmp.symlink_to(src.resolve())
      else:
        os.link(src, tmp)
  folder.finish()
  return len(named)
