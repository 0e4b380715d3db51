"""A curation report: score histograms, scatter plots, per-stratum sample grids (PNG), and a Markdown
summary of what was kept and why the rest was dropped."""
from __future__ import annotations

import collections
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from fractalpre import util
from superres.curation.scoring import SCORE_COLUMNS, load_rgb, Unreadable

SCATTERS = (("blockiness", "segments"), ("sharpness", "entropy"), ("megapixels", "segments"))


def _values(rows, column):
  out = []
  for r in rows:
    v = r.get(column)
    if v is not None and v != "" and not (isinstance(v, float) and math.isnan(v)):
      out.append(float(v))
  return np.array(out)


def _grid(paths: list[str], tile: int = 128, cols: int = 8) -> np.ndarray:
  tiles = []
  for p in paths:
    try:
      rgb, _ = load_rgb(Path(p))
    except (Unreadable, OSError):
      continue
    tiles.append(np.asarray(Image.fromarray(rgb).resize((tile, tile), Image.Resampling.BILINEAR)))
  return util.image_grid(tiles, cols) if tiles else np.zeros((tile, tile, 3), np.uint8)


def write_report(rows: list[dict], out: str | os.PathLike, samples: int = 16) -> Path:
  """Writes the plots and OUT/report.md; `rows` may be scores or curation decisions (keep/reason/stratum)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  missing = sorted({"path"} - set(rows[0])) if rows else []
  if missing:
    raise ValueError(f"the table has no {missing[0]!r} column (columns: {', '.join(rows[0])}); give a table "
                     "written by `superres score` or `superres curate`")
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  scored = [r for r in rows if not r.get("error")]
  kept = [r for r in scored if r.get("keep", True) in (True, "True")]
  lines = ["# Curation report", "", f"- files: {len(rows)}", f"- scored: {len(scored)}",
           f"- errors: {len(rows) - len(scored)}"]
  if "keep" in (rows[0] if rows else {}):
    lines.append(f"- kept: {sum(1 for r in rows if r.get('keep') in (True, 'True'))}")
    reasons = collections.Counter(part.split(" ")[0] if not part.startswith("error") else "error"
                                  for r in rows for part in str(r.get("reason") or "").split("; ") if part)
    lines += ["", "| reason | images |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in reasons.most_common()]
  lines += ["", "| score | median | 10% | 90% | n |", "|---|---:|---:|---:|---:|"]
  for column in SCORE_COLUMNS:
    v = _values(scored, column)
    if len(v):
      lines.append(f"| {column} | {np.median(v):.3g} | {np.quantile(v, 0.1):.3g} | {np.quantile(v, 0.9):.3g} | {len(v)} |")

  fig, axes = plt.subplots(2, math.ceil(len(SCORE_COLUMNS) / 2), figsize=(16, 7))
  for ax, column in zip(axes.ravel(), SCORE_COLUMNS):
    ax.hist(_values(scored, column), bins=40, color="tab:blue", alpha=0.6, label="all")
    if kept is not scored:
      ax.hist(_values(kept, column), bins=40, color="tab:green", alpha=0.6, label="kept")
    ax.set_title(column)
  axes.ravel()[0].legend()
  fig.tight_layout()
  fig.savefig(out / "histograms.png", dpi=80)
  plt.close(fig)
  lines += ["", "![histograms](histograms.png)"]

  fig, axes = plt.subplots(1, len(SCATTERS), figsize=(15, 4.5))
  for ax, (x, y) in zip(axes, SCATTERS):
    pairs = [(float(r[x]), float(r[y])) for r in scored if r.get(x) not in (None, "") and r.get(y) not in (None, "")]
    if pairs:
      xs, ys = np.array(pairs).T
      ax.scatter(xs, ys, s=6, alpha=0.5)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
  fig.tight_layout()
  fig.savefig(out / "scatter.png", dpi=80)
  plt.close(fig)
  lines += ["", "![scatter](scatter.png)"]

  strata = sorted({r["stratum"] for r in rows if r.get("stratum") not in (None, "")})
  for s in strata:
    members = [r["path"] for r in rows if r.get("stratum") == s][:samples]
    Image.fromarray(_grid(members)).save(out / f"stratum_{s}.png")
    lines += ["", f"## Stratum {s}", "", f"![stratum {s}](stratum_{s}.png)"]
  if not strata and scored:
    Image.fromarray(_grid([r["path"] for r in kept[:samples]])).save(out / "samples.png")
    lines += ["", "## Samples", "", "![samples](samples.png)"]
  (out / "report.md").write_text("\n".join(lines) + "\n")
  return out / "report.md"
