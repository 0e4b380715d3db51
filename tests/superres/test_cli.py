import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from superres import cli, metrics, quality, table


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  photos = quality.bundled_photos()
  (root / "sub").mkdir()
  for i, photo in enumerate(photos[:4]):
    Image.fromarray(photo).save(root / f"p{i}.png")
    Image.fromarray(photo).save(root / f"p{i}_q30.jpg", quality=30)
  small = Image.fromarray(photos[0]).resize((photos[0].shape[1] // 2, photos[0].shape[0] // 2))
  small.save(root / "sub" / "p0_small.jpg", quality=92)
  (root / "empty.png").write_bytes(b"")
  (root / "notes.txt").write_text("not an image")
  data = (root / "p1_q30.jpg").read_bytes()
  (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
  (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
  Image.fromarray(photos[1]).convert("CMYK").save(root / "cmyk.jpg")
  Image.fromarray((np.arange(96 * 96).reshape(96, 96) * 7).astype(np.uint16)).save(root / "deep.png")
  Image.fromarray(photos[2]).convert("P").save(root / "palette.png")
  Image.fromarray(photos[2]).convert("RGBA").save(root / "alpha.png")
  Image.fromarray(photos[3]).convert("L").save(root / "gray.png")
  frames = [Image.fromarray(p).resize((64, 64)) for p in photos[4:6]]
  frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
  Image.fromarray(np.zeros((1100, 1100, 3), np.uint8) + 100).save(root / "big.png")
  outside = tmp_path_factory.mktemp("outside")
  Image.fromarray(photos[6]).save(outside / "o.png")
  os.symlink(outside / "o.png", root / "link.png")
  return root


def rows_by_name(path):
  return {os.path.basename(r["path"]): r for r in table.read(path)}


def test_every_file_gets_a_row_and_bad_inputs_get_errors(folder, tmp_path):
  out = tmp_path / "scores.csv"
  assert cli.main(["score", str(folder), "--out", str(out), "--workers", "2", "--max-pixels", "1000000",
                   "--quiet"]) == 0
  rows = rows_by_name(out)
  files = {p.name for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
  assert set(rows) == files
  assert rows["empty.png"]["error"] == "empty file"
  assert rows["notes.txt"]["error"].startswith("not a readable image")
  assert rows["truncated.jpg"]["error"].startswith("not a readable image")
  assert rows["corrupt.png"]["error"].startswith("not a readable image")
  assert "over the pixel limit" in rows["big.png"]["error"]
  assert "leaves the root" in rows["link.png"]["error"]
  assert rows["cmyk.jpg"]["note"] == "CMYK converted to RGB" and rows["cmyk.jpg"]["jpeg_quality"] == 75
  assert rows["deep.png"]["note"] == "16-bit scaled to 8-bit"
  assert "palette converted to RGB" in rows["palette.png"]["note"]
  assert "alpha dropped" in rows["alpha.png"]["note"]
  assert rows["gray.png"]["note"] == "grayscale"
  assert rows["anim.gif"]["note"].startswith("animated: first of 2 frames")
  assert rows["p2_q30.jpg"]["jpeg_quality"] == 30 and rows["p2_q30.jpg"]["jpeg_quality_exact"] is True
  assert rows["p2.png"]["jpeg_quality"] is None
  assert rows["p2_q30.jpg"]["blockiness"] > 3 * rows["p2.png"]["blockiness"]
  image = np.asarray(Image.open(folder / "p0.png").convert("RGB"))
  assert rows["p0.png"]["blockiness"] == pytest.approx(metrics.blockiness(image))
  assert rows["p0.png"]["phash"] == f"{metrics.perceptual_hash(image):016x}"


def test_rescoring_reuses_unchanged_rows_and_rescores_changed_files(folder, tmp_path):
  folder = Path(shutil.copytree(folder, tmp_path / "copy", symlinks=True))  # this test changes a file
  out = tmp_path / "scores.parquet"
  assert cli.main(["score", str(folder), "--out", str(out), "--quiet"]) == 0
  rows = table.read(out)
  for r in rows:  # a sentinel shows which rows the second run reuses
    if r["path"].endswith("p3.png"):
      r["entropy"] = -1.0
  table.write(out, rows, list(rows[0]))
  changed = folder / "sub" / "p0_small.jpg"
  Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed, quality=50)
  assert cli.main(["score", str(folder), "--out", str(out), "--quiet", "--follow-symlinks"]) == 0
  after = rows_by_name(out)
  assert after["p3.png"]["entropy"] == -1.0
  assert after["p0_small.jpg"]["jpeg_quality"] == 50
  assert not after["link.png"].get("error")  # followed now


def test_curate_reasons_dedup_strata_and_outputs(folder, tmp_path):
  scores = tmp_path / "scores.csv"
  cli.main(["score", str(folder), "--out", str(scores), "--quiet", "--max-pixels", "1000000"])
  manifest = tmp_path / "manifest.json"
  assert cli.main(["curate", str(scores), "--out", str(manifest), "--max-blockiness", "40", "--dedup",
                   "--strata", "2", "--strata-by", "entropy"]) == 0
  decisions = {os.path.basename(d["path"]): d for d in json.loads(manifest.read_text())}
  assert decisions["p1_q30.jpg"]["reason"].startswith("blockiness") and not decisions["p1_q30.jpg"]["keep"]
  assert decisions["empty.png"]["reason"] == "error: empty file"
  # p0.png and its half-size JPEG copy: the larger one stays.
  assert decisions["p0.png"]["keep"]
  assert decisions["p0_small.jpg"]["reason"].startswith(f"near-duplicate of {folder / 'p0.png'}")
  kept = [d for d in decisions.values() if d["keep"]]
  assert sorted({d["stratum"] for d in kept}) == [0, 1]
  low = max(d["entropy"] for d in kept if d["stratum"] == 0)
  assert all(d["entropy"] >= low for d in kept if d["stratum"] == 1)
  out = tmp_path / "curated"
  assert cli.main(["curate", str(scores), "--out", str(out), "--max-blockiness", "40", "--link", "symlink"]) == 0
  linked = sorted(p.name for p in out.iterdir())
  assert f"{folder.name}__p0.png" in linked
  assert not any(n.endswith("p1_q30.jpg") for n in linked)
  assert all((out / n).is_symlink() for n in linked)


def test_estimate_quality_and_report(folder, tmp_path, capsys):
  scores = tmp_path / "scores.csv"
  cli.main(["score", str(folder), "--out", str(scores), "--quiet"])
  assert cli.main(["estimate-quality", str(scores), "--json"]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert 50 <= result["quality"] <= 100 and set(result["kl"]) == {"100", "95", "85", "75", "50"}
  assert cli.main(["report", str(scores), "--out", str(tmp_path / "report")]) == 0
  for name in ("report.md", "histograms.png", "scatter.png", "samples.png"):
    assert (tmp_path / "report" / name).stat().st_size > 0
  assert "| blockiness |" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["score", "/no/such/dir", "--out", "x.csv"], "DIR must be an existing folder"),
    (["score", ".", "--out", "x.txt"], "a score table must end in .csv or .parquet"),
    (["score", ".", "--out", "x.csv", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["curate", "missing.csv", "--out", "m.csv"], "score table missing.csv does not exist"),
    (["curate", "s.csv", "--out", "m.csv", "--dedup-threshold", "64"], r"--dedup-threshold must be in \[0, 63\]"),
])
def test_bad_usage_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(message, err[0]), err
