import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractalpre import util
from superres import cli
from superres.curation import metrics, quality, scoring, table


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
  linked = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_symlink())
  assert "p0.png" in linked and "sub/p0_small.jpg" in linked  # names are paths under the scored folder
  assert not any(n.endswith("p1_q30.jpg") for n in linked)
  held = json.loads((out / util.output_folder.MANIFEST).read_text())["files"]
  assert sorted(held) == linked


def _two_folders_of_one_name(tmp_path):
  photo = quality.bundled_photos(["coins"])[0][:64, :64]
  for parent in ("p", "q"):
    (tmp_path / "in" / parent / "x").mkdir(parents=True)
    Image.fromarray(photo if parent == "p" else 255 - photo).save(tmp_path / "in" / parent / "x" / "img.png")
  scores = tmp_path / "scores.csv"
  assert cli.main(["score", str(tmp_path / "in"), "--out", str(scores), "--quiet", "--workers", "1"]) == 0
  return scores


def test_curate_keeps_images_of_one_name_apart_and_a_rerun_holds_exactly_its_result(tmp_path, capsys):
  scores = _two_folders_of_one_name(tmp_path)
  out = tmp_path / "out"
  assert cli.main(["curate", str(scores), "--out", str(out)]) == 0
  for parent in ("p", "q"):
    assert (out / parent / "x" / "img.png").read_bytes() == (tmp_path / "in" / parent / "x" / "img.png").read_bytes()
  # the same command again: nothing to do, the same folder
  before = {p: p.read_bytes() for p in out.rglob("*.png")}
  assert cli.main(["curate", str(scores), "--out", str(out)]) == 0
  assert {p: p.read_bytes() for p in out.rglob("*.png")} == before
  # stricter, into the same folder: refused, naming what changed, the folder untouched
  rows = table.read(scores)
  segments = sorted(r["segments"] for r in rows)
  strict = ["curate", str(scores), "--out", str(out), "--min-segments", str(segments[1])]
  capsys.readouterr()
  assert cli.main(strict) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"holds the result of another superres curate (min_segments: null -> {segments[1]:g}" \
      in err[0].replace(".0)", ")") and "add --replace" in err[0], err
  assert {p: p.read_bytes() for p in out.rglob("*.png")} == before
  # with --replace it holds exactly the new result: the dropped image is gone
  if segments[0] == segments[1]:
    pytest.skip("both images have the same segment count")
  assert cli.main(strict + ["--replace"]) == 0
  kept = [r["path"] for r in rows if r["segments"] >= segments[1]]
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(
      str(Path(p).relative_to(tmp_path / "in")) for p in kept)


def test_curate_copies_only_files_under_the_folder_it_scored(tmp_path, capsys):
  scores = _two_folders_of_one_name(tmp_path)
  rows = table.read(scores)
  rows[0]["path"] = "/etc/passwd"
  table.write(scores, rows, scoring.COLUMNS)
  assert cli.main(["curate", str(scores), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"superres curate: error: the score table lists /etc/passwd, which is outside the folder it scored "
                 f"({(tmp_path / 'in').resolve()}); curate copies only files under that folder"]
  assert not any((tmp_path / "out").rglob("*passwd*"))


def test_curate_never_writes_into_a_folder_it_does_not_own(tmp_path, capsys):
  scores = _two_folders_of_one_name(tmp_path)
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  (workdir / "config.json").write_text("{}")
  assert cli.main(["curate", str(scores), "--out", str(workdir)]) == 2
  err = capsys.readouterr().err.strip()
  assert "holds a training workdir (checkpoints, config.json) and no record that superres curate wrote it" in err
  assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints", "config.json"]


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
    (["curate", "s.csv", "--out", "m", "--min-quality", "150"], r"--min-quality must be a finite number \[0, 100\], got 150"),
    (["curate", "s.csv", "--out", "m", "--min-quality", "nan"], r"--min-quality must be a finite number \[0, 100\], got nan"),
    (["curate", "s.csv", "--out", "m", "--min-segments", "nan"], r"--min-segments must be a finite number >= 0, got nan"),
    (["curate", "s.csv", "--out", "m", "--max-blockiness", "-1"], r"--max-blockiness must be a finite number >= 0, got -1"),
    (["curate", "s.csv", "--out", "m", "--min-megapixels", "inf"], r"--min-megapixels must be a finite number >= 0, got inf"),
])
def test_bad_usage_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(message, err[0]), err


def test_float_tiff_is_converted_with_a_note_and_a_nan_tiff_is_an_error_row(tmp_path):
  gray = quality.bundled_photos(["camera"])[0][:96, :96, 0]
  Image.fromarray(gray / 255.0).save(tmp_path / "float.tif")  # mode F, values in [0, 1]
  Image.fromarray(np.full((64, 64), np.nan, np.float32)).save(tmp_path / "nan.tif")
  assert cli.main(["score", str(tmp_path), "--out", str(tmp_path / "out" / "s.csv"), "--quiet", "--workers", "1"]) == 0
  rows = rows_by_name(tmp_path / "out" / "s.csv")
  assert rows["float.tif"]["note"] == "32-bit float: float32 in [0, 1] scaled to 8-bit"
  assert rows["float.tif"]["blockiness"] == pytest.approx(metrics.blockiness(gray))
  assert rows["float.tif"]["phash"] == f"{metrics.perceptual_hash(gray):016x}"
  assert rows["nan.tif"]["error"] == "32-bit float image: the image has NaN or infinite values"


def test_links_loops_and_vanished_files_get_error_rows_and_the_scan_goes_on(tmp_path, monkeypatch):
  from superres.curation import scoring
  root = tmp_path / "root"
  (root / "sub").mkdir(parents=True)
  Image.fromarray(quality.bundled_photos(["coins"])[0][:64, :64]).save(root / "sub" / "a.png")
  os.symlink(root / "self.png", root / "self.png")  # a symlink loop
  os.symlink(root / "gone.png", root / "dangling.png")
  os.symlink(root, root / "sub" / "up")  # a folder loop, entered with --follow-symlinks
  listed = scoring.list_files
  monkeypatch.setattr(scoring, "list_files", lambda *a, **k: (lambda f, e: (f + [root / "vanished.png"], e))(
      *listed(*a, **k)))
  for follow in ([], ["--follow-symlinks"]):
    out = tmp_path / f"scores{len(follow)}.csv"
    assert cli.main(["score", str(root), "--out", str(out), "--quiet", "--workers", "1", *follow]) == 0
    rows = rows_by_name(out)
    assert rows["self.png"]["error"] == "symlink loop"
    assert rows["dangling.png"]["error"] == f"dangling symlink to {root / 'gone.png'}"
    assert rows["vanished.png"]["error"] == "cannot read: No such file or directory"
    assert rows["a.png"]["blockiness"] is not None and not rows["a.png"].get("error")
    if follow:
      assert rows["up"]["error"] == "symlink loop or second link to a folder already scanned"
    assert len(rows) == 4 + bool(follow)


def test_cache_is_keyed_on_max_pixels_and_the_output_table_is_not_scored(tmp_path):
  Image.fromarray(quality.bundled_photos(["coins"])[0][:100, :100]).save(tmp_path / "a.png")
  out = tmp_path / "scores.csv"  # inside the scanned folder
  assert cli.main(["score", str(tmp_path), "--out", str(out), "--quiet", "--workers", "1"]) == 0
  assert cli.main(["score", str(tmp_path), "--out", str(out), "--quiet", "--workers", "1"]) == 0
  assert list(rows_by_name(out)) == ["a.png"]
  assert cli.main(["score", str(tmp_path), "--out", str(out), "--quiet", "--workers", "1",
                   "--max-pixels", "5000"]) == 0
  assert rows_by_name(out)["a.png"]["error"] == "100x100 is over the pixel limit of 5000"


def test_worker_processes_die_with_a_killed_scan(tmp_path):
  import signal
  import subprocess
  import sys
  import time
  photo = quality.bundled_photos(["astronaut"])[0]
  for i in range(400):
    Image.fromarray(np.roll(photo, i, axis=1)).save(tmp_path / f"{i:03d}.png", compress_level=0)
  proc = subprocess.Popen([sys.executable, "-m", "superres", "score", str(tmp_path), "--out",
                           str(tmp_path.parent / f"{tmp_path.name}.csv"), "--quiet", "--workers", "2"])

  def state(pid):  # the /proc state letter, or None when the process is gone
    try:
      return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
      return None

  def tree(root):
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
      try:
        parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
      except (OSError, ValueError):
        continue
    found, todo = [], [root]
    while todo:
      pid = todo.pop()
      kids = [child for child, parent in parents.items() if parent == pid]
      found += kids
      todo += kids
    return found

  deadline = time.time() + 60
  workers = []
  while time.time() < deadline and len(workers) < 3:  # the forkserver and its two workers
    time.sleep(0.2)
    workers = tree(proc.pid)
  assert len(workers) >= 3, workers
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 20
  while time.time() < deadline and any(state(p) not in (None, 'Z') for p in workers):
    time.sleep(0.2)
  assert [state(p) for p in workers if state(p) not in (None, 'Z')] == []


def test_estimate_quality_speaks_jpeg_quality_0_to_100_and_keeps_its_cache_beside_the_scores(folder, tmp_path,
                                                                                             capsys, monkeypatch):
  scores = tmp_path / "scores.csv"
  cli.main(["score", str(folder), "--out", str(scores), "--quiet"])
  reference = tmp_path / "reference"
  reference.mkdir()
  for i, photo in enumerate(quality.bundled_photos()[:6]):
    Image.fromarray(photo).save(reference / f"r{i}.png")
  work = tmp_path / "cwd"
  work.mkdir()
  monkeypatch.chdir(work)
  assert cli.main(["estimate-quality", str(scores), "--reference", str(reference), "--threshold", "95"]) == 0
  line = capsys.readouterr().out.strip().splitlines()[-1]
  estimated = float(re.search(r"estimated JPEG quality ([\d.]+)", line).group(1))
  assert 50 <= estimated <= 100 and "at threshold 95)" in line
  assert ("keep" if estimated >= 95 else "drop") in line
  assert list(work.iterdir()) == [] and (tmp_path / "scores.reference.csv").exists()


@pytest.mark.parametrize("argv,message", [
    (["score", ".", "--out", "x.csv", "--max-pixels", "-5"], "--max-pixels must be >= 1, got -5"),
    (["score", ".", "--out", "afile/x.csv"], "--out afile/x.csv cannot be created: afile is not a folder"),
    (["estimate-quality", "s.csv", "--threshold", "900"], r"--threshold is a JPEG quality in \[0, 100\], got 900"),
    (["curate", "s.csv", "--format", "tfds", "--out", "m.csv"], "--format tfds writes a folder, but --out m.csv"),
    (["report", "nopath.csv", "--out", "r"], r"score table nopath.csv has no 'path' column \(it has blockiness\)"),
])
def test_more_bad_usage_exits_2_with_one_line_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
  from superres.curation import scoring
  monkeypatch.chdir(tmp_path)
  (tmp_path / "afile").write_text("")
  table.write(tmp_path / "s.csv", [{"path": "a.png", "blockiness": 3.0}], scoring.COLUMNS)
  table.write(tmp_path / "nopath.csv", [{"blockiness": 3.0}], ["blockiness"])
  monkeypatch.setattr(scoring, "list_files", lambda *a, **k: pytest.fail("the scan started"))
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(message, err[0]), err
  assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["curate", "estimate-quality", "report"])
@pytest.mark.parametrize("damage,message", [
    ("cut", r"score table s.csv, line 3: no 'max_pixels' \(the row is cut short"),
    ("no path column", r"score table s.csv has no 'path' column \(it has size_bytes"),
    ("empty path", r"score table s.csv, line 2: the 'path' column is empty"),
])
def test_a_damaged_score_table_is_one_line_naming_file_line_and_column(command, damage, message, capsys, tmp_path,
                                                                        monkeypatch):
  from superres.curation import scoring
  monkeypatch.chdir(tmp_path)
  rows = [{"path": f"{i}.png", "size_bytes": 10, "jpeg_quality": 90} for i in range(3)]
  if damage == "empty path":
    rows[0]["path"] = ""
  columns = scoring.COLUMNS if damage != "no path column" else [c for c in scoring.COLUMNS if c != "path"]
  table.write(tmp_path / "s.csv", rows, columns)
  if damage == "cut":  # a kill or a full disk mid-row: the second data row ends after its size
    lines = (tmp_path / "s.csv").read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:3])
    (tmp_path / "s.csv").write_text("\n".join(lines[:3]) + "\n")
  argv = {"curate": ["curate", "s.csv", "--out", "m.csv"], "estimate-quality": ["estimate-quality", "s.csv"],
          "report": ["report", "s.csv", "--out", "r"]}[command]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(message, err[0]), err
  assert not (tmp_path / "m.csv").exists() and not (tmp_path / "r").exists()


def test_score_on_a_full_disk_is_one_line_and_keeps_what_it_had(tmp_path):
  import resource
  import signal
  import subprocess
  import sys
  for i in range(3):
    Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")

  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
  result = subprocess.run([sys.executable, "-m", "superres", "score", str(tmp_path), "--out",
                           str(tmp_path / "out" / "s.csv"), "--quiet", "--workers", "1"],
                          capture_output=True, text=True, preexec_fn=limit)
  assert result.returncode == 1, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("superres score: error: no space left writing "), lines


def test_max_pixels_above_pillow_s_own_limit_is_honoured(tmp_path):
  from fractalpre import util
  big = np.zeros((1, 1), np.uint8)
  data = bytearray(util.png_bytes(big))
  import struct
  import zlib
  data[16:24] = struct.pack(">II", 15_000, 13_000)  # 195 MP: over Pillow's 179 MP refusal
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  (tmp_path / "big.png").write_bytes(bytes(data))
  with pytest.raises(util.UnreadableImage, match=r"(15000x13000|195000000 pixels) is over the pixel limit of 100000000"):
    util.read_image(tmp_path / "big.png", max_pixels=100_000_000)
  with pytest.raises(util.UnreadableImage, match="not a readable image"):  # past the limit check: its data is cut
    util.read_image(tmp_path / "big.png", max_pixels=200_000_000)
