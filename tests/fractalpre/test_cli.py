import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractalpre import cli, fractals

ARGS = ["--classes", "12", "--size", "48", "--points", "5000", "--quiet"]


def tree(root: Path) -> dict:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def data_tree(root: Path) -> dict:
  """tree() with the manifest's record of the shard count left out: the data itself must not depend on it."""
  files = tree(root)
  manifest = json.loads(files.pop("manifest.json"))
  assert manifest.pop("shards") >= 1
  return {**files, "manifest.json": manifest}


def test_png_folder_layout_manifest_and_pixels(tmp_path):
  assert cli.main(["generate", *ARGS, "--instances", "2", "--out", str(tmp_path / "d")]) == 0
  out = tmp_path / "d"
  folders = sorted(p.name for p in out.iterdir() if p.is_dir())
  assert folders == [f"{c:05d}" for c in range(12)]
  assert sorted(p.name for p in (out / "00007").iterdir()) == ["00000.png", "00001.png"]
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["params"]["num_classes"] == 12 and manifest["params"]["size"] == 48
  assert len(manifest["classes"]) == 12 and np.array(manifest["classes"][3]["maps"]).shape == (2, 2, 3)
  ds = fractals.OnePFrac(num_classes=12, instances_per_class=2, size=48, points=5000)
  image, label = ds[15]
  np.testing.assert_array_equal(np.array(Image.open(out / "00007" / "00001.png")), image)
  assert label == 7
  np.testing.assert_allclose(manifest["classes"][7]["maps"], ds.class_system(7).system, atol=1e-12)


def test_shards_and_worker_counts_give_the_same_bytes(tmp_path):
  args = ["generate", "--dataset", "fractaldb", "--classes", "3", "--instances", "200", "--size", "32",
          "--points", "3000", "--quiet"]
  assert cli.main([*args, "--workers", "1", "--out", str(tmp_path / "whole")]) == 0
  for i in range(3):
    assert cli.main([*args, "--workers", "2", "--shard", f"{i}/3", "--out", str(tmp_path / "sharded")]) == 0
    if i == 0:
      first = tree(tmp_path / "sharded")
      assert 1 < len(first) < 601  # shard 0 wrote only its chunks
  assert data_tree(tmp_path / "whole") == data_tree(tmp_path / "sharded")
  assert len(tree(tmp_path / "whole")) == 601


def test_killed_run_resumes_to_identical_bytes(tmp_path):
  args = [sys.executable, "-m", "fractalpre", "generate", "--classes", "1500", "--size", "64", "--points",
          "30000", "--workers", "1", "--quiet"]
  killed = tmp_path / "killed"
  proc = subprocess.Popen([*args, "--out", str(killed)], stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and len(list(killed.rglob("*.png"))) < 300:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = len(list(killed.rglob("*.png")))
  assert 0 < partial < 1500, partial
  subprocess.run([*args, "--out", str(killed)], check=True)
  subprocess.run([*args, "--out", str(tmp_path / "whole")], check=True)
  assert tree(killed) == tree(tmp_path / "whole")
  assert not list(killed.rglob("*.tmp"))


def test_tfds_output_loads_back_without_tensorflow(tmp_path):
  out = tmp_path / "t"
  for i in range(2):
    assert cli.main(["generate", *ARGS, "--instances", "100", "--format", "tfds", "--shard", f"{i}/2",
                     "--out", str(out)]) == 0
    assert (out / "dataset_info.json").exists() == (i == 1)  # metadata once every shard file exists
  code = f"""
import sys, numpy as np, tensorflow_datasets as tfds
from fractalpre import fractals
src = tfds.builder_from_directory({str(out)!r}).as_data_source()["train"]
ds = fractals.OnePFrac(num_classes=12, instances_per_class=100, size=48, points=5000)
assert len(src) == len(ds) == 1200, len(src)
for i in (0, 517, 1023, 1024, 1199):
  image, label = ds[i]
  assert src[i]["label"] == label and np.array_equal(src[i]["image"][..., 0], image), i
assert "tensorflow" not in sys.modules
print("ok")
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    (["--sigma", "6"], r"--sigma must be in \(0, 6\) for 2 maps, got 6.0"),
    (["--sigma", "0"], r"--sigma must be in \(0, 6\)"),
    (["--delta", "-0.1"], "--delta must be a finite number >= 0, got -0.1"),
    (["--size", "15"], "--size must be >= 16, got 15"),
    (["--points", "0"], "--points must be > 0, got 0"),
    (["--classes", "0"], "--classes must be > 0, got 0"),
    (["--shard", "2/2"], "--shard must look like i/n with integers 0 <= i < n, got '2/2'"),
    (["--shard", "a/b"], "--shard must look like i/n"),
    (["--format", "zip"], "argument --format: invalid choice: 'zip'"),
    (["--background"], "--background needs color"),
    (["--size", "1000000"], r"--size too large: size 1000000 with points 100000 needs [\d.]+ GiB .* more than this "
                            r"machine's [\d.]+ GiB of memory"),
    (["--points", "100000000000"], r"--points too large: size 224 with points 100000000000 needs"),
    (["--delta", "inf"], "--delta must be a finite number >= 0, got inf"),
    (["--instances", "0"], "--instances must be > 0, got 0"),
    (["--dataset", "fractaldb", "--delta", "0.2", "--sigma", "3"], "--delta, --sigma: only for --dataset 1p-frac"),
    (["--test-instances", "-1"], "--test-instances must be >= 0, got -1"),
    (["--dataset", "fractaldb", "--instances", "999", "--test-instances", "2"],
     r"--test-instances must be in \[1, 1\] \(fractaldb has 1000 distinct instances per class\), got 2"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
  out = tmp_path / "never"
  try:
    code = cli.main(["generate", "--out", str(out), *args])
  except SystemExit as e:  # argparse's own checks exit from inside parse_args
    code = e.code
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and err[0].startswith("fractalpre generate: error:")
  assert re.search(message, err[0]), err[0]
  assert not out.exists()


def test_existing_folder_with_another_manifest_is_refused_untouched(tmp_path, capsys):
  out = tmp_path / "d"
  assert cli.main(["generate", *ARGS, "--out", str(out)]) == 0
  before = tree(out)
  assert cli.main(["generate", *ARGS, "--seed", "1", "--out", str(out)]) == 2
  assert "holds a dataset with a different manifest" in capsys.readouterr().err
  assert tree(out) == before
  (tmp_path / "file").write_text("x")
  assert cli.main(["generate", *ARGS, "--out", str(tmp_path / "file" / "sub")]) == 2
  assert "is not a folder" in capsys.readouterr().err


def test_preview_writes_a_grid(tmp_path):
  out = tmp_path / "grid.png"
  assert cli.main(["preview", "--classes", "9", "--size", "32", "--points", "3000", "--count", "9",
                   "--out", str(out)]) == 0
  grid = np.array(Image.open(out))
  assert grid.shape == (3 * 34, 3 * 34)
  ds = fractals.OnePFrac(num_classes=9, size=32, points=3000)
  np.testing.assert_array_equal(grid[35:67, 69:101], ds[5][0])


def test_two_writers_of_one_shard_the_loser_says_what_happened(tmp_path, capsys):
  from fractalpre import util
  out = tmp_path / "d"
  out.mkdir()
  with util.FolderLock(out, "test", "shard-0-of-2"):
    assert cli.main(["generate", *ARGS, "--out", str(out), "--shard", "0/2"]) == 2
    assert re.fullmatch(rf"fractalpre generate: error: {out} is in use by another fractalpre generate of shard "
                        rf"0/2 \(pid {__import__('os').getpid()}, holding .shard-0-of-2.lock\); wait for it to "
                        r"finish or use another folder\n", capsys.readouterr().err)
    assert cli.main(["generate", *ARGS, "--out", str(out), "--shard", "1/2"]) == 0  # another shard may run
  assert cli.main(["generate", *ARGS, "--out", str(out), "--shard", "0/2"]) == 0
  assert cli.main(["generate", *ARGS, "--out", str(tmp_path / "whole")]) == 0
  assert data_tree(out) == data_tree(tmp_path / "whole")  # and no lock file is left behind


def test_a_failed_manifest_write_does_not_lock_the_folder(tmp_path, capsys):
  whole, out = tmp_path / "whole", tmp_path / "d"
  assert cli.main(["generate", *ARGS, "--out", str(whole)]) == 0
  # A disk that filled up while the manifest was written: only a partial temporary file is left.
  out.mkdir()
  (out / ".manifest.json.tmp").write_bytes((whole / "manifest.json").read_bytes()[:100])
  assert cli.main(["generate", *ARGS, "--out", str(out)]) == 0
  assert tree(out) == tree(whole)
  # A kill between writing the manifest and renaming it, after some images were written.
  (out / "manifest.json").rename(out / ".manifest.json.tmp")
  for png in sorted(out.rglob("*.png"))[::2]:
    png.unlink()
  assert cli.main(["generate", *ARGS, "--out", str(out)]) == 0
  assert tree(out) == tree(whole)
  # Images next to a temporary manifest that is not this dataset's: refused, untouched.
  (out / "manifest.json").rename(out / ".manifest.json.tmp")
  (out / ".manifest.json.tmp").write_text("{}")
  before = tree(out)
  capsys.readouterr()
  assert cli.main(["generate", *ARGS, "--out", str(out)]) == 2
  assert "is not empty and holds no manifest.json (found '00000')" in capsys.readouterr().err
  assert tree(out) == before


def test_tfds_output_is_byte_identical_across_processes(tmp_path):
  digests = []
  for hash_seed in ("1", "2"):
    out = tmp_path / hash_seed
    subprocess.run([sys.executable, "-m", "fractalpre", "generate", *ARGS, "--instances", "3", "--format", "tfds",
                    "--out", str(out)], check=True, env={**__import__("os").environ, "PYTHONHASHSEED": hash_seed})
    digests.append({name: __import__("hashlib").sha256(data).hexdigest() for name, data in tree(out).items()})
  assert digests[0] == digests[1]


@pytest.mark.parametrize("first,second,message", [
    (["--shard", "0/2"], ["--shard", "1/3"], "written with --format png in 2 shards; this run asks for --format png in 3"),
    ([], ["--format", "tfds"], "written with --format png in 1 shards; this run asks for --format tfds in 1"),
])
def test_a_second_run_with_another_layout_into_one_folder_is_refused(tmp_path, capsys, first, second, message):
  out = tmp_path / "d"
  assert cli.main(["generate", *ARGS, *first, "--out", str(out)]) == 0
  before = tree(out)
  capsys.readouterr()
  assert cli.main(["generate", *ARGS, *second, "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and "\n" not in err
  assert tree(out) == before
