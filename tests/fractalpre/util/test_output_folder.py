"""The one writer of output folders: a stopped run continues, a rerun holds exactly its result, inputs that
changed are redone, and nothing it did not write is touched."""
import json
import os

import pytest

from fractalpre import util
from fractalpre.util import output_folder, provenance

COMMAND = "test command"


def _write(out, inputs, record=None, replace=False, stop_after=None):
  """Copies each input file to its name in `out` through the writer; `stop_after` raises after that many
  writes, as a kill would. Returns the names it wrote."""
  written = []
  with util.OutputFolder(out, COMMAND, record or provenance.fingerprint({"k": 1}), replace) as folder:
    claimed = [(name, src, folder.claim(name, str(src), output_folder.signature(src))) for name, src in inputs]
    folder.begin()
    for name, src, dst in claimed:
      if folder.fresh(name):
        continue
      if stop_after is not None and len(written) == stop_after:
        raise KeyboardInterrupt
      dst.parent.mkdir(parents=True, exist_ok=True)
      util.write_atomic(dst, src.read_bytes())
      written.append(name)
    folder.finish()
  return written


def _inputs(tmp_path, names):
  (tmp_path / "in").mkdir(exist_ok=True)
  out = []
  for name in names:
    src = tmp_path / "in" / name.replace("/", "_")
    if not src.exists():
      src.write_text(name)
    out.append((name, src))
  return out


def _held(out):
  return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                and p.name != output_folder.MANIFEST)


def test_a_stopped_run_continues_and_a_rerun_with_nothing_to_do_touches_nothing(tmp_path):
  out, inputs = tmp_path / "out", _inputs(tmp_path, ["a.png", "sub/b.png", "c.png"])
  with pytest.raises(KeyboardInterrupt):
    _write(out, inputs, stop_after=2)
  assert _write(out, inputs) == ["c.png"]  # the two finished outputs are kept
  assert _held(out) == ["a.png", "c.png", "sub/b.png"]
  manifest = out / output_folder.MANIFEST
  before = manifest.stat().st_mtime_ns, provenance.listing_digest(out)
  assert _write(out, inputs) == []
  assert (manifest.stat().st_mtime_ns, provenance.listing_digest(out)) == before


def test_changed_inputs_are_redone_and_removed_inputs_removed_keeping_the_user_s_folders(tmp_path):
  out, inputs = tmp_path / "out", _inputs(tmp_path, ["a.png", "sub/b.png", "c.png"])
  _write(out, inputs)
  (out / "sub" / "empty").mkdir()  # a folder of the user's inside
  src = inputs[0][1]
  src.write_text("new a")
  os.utime(src, ns=(1, 1))  # older than the output: only its signature tells
  assert _write(out, [inputs[0], inputs[1]]) == ["a.png"]
  assert (out / "a.png").read_text() == "new a" and _held(out) == ["a.png", "sub/b.png"]
  assert (out / "sub" / "empty").is_dir()


def test_another_result_is_refused_then_replaced_and_other_folders_are_never_written(tmp_path):
  out, inputs = tmp_path / "out", _inputs(tmp_path, ["a.png", "b.png"])
  _write(out, inputs)
  other = provenance.fingerprint({"k": 2})
  with pytest.raises(util.UsageError, match=r"holds the result of another test command \(k: 1 -> 2\); add --replace"):
    _write(out, inputs[:1], other)
  assert _write(out, inputs[:1], other, replace=True) == ["a.png"] and _held(out) == ["a.png"]
  recorded = json.loads((out / output_folder.MANIFEST).read_text())
  assert recorded["fingerprint"] == other and list(recorded["files"]) == ["a.png"]
  # a training workdir, and a folder of the user's files
  run = tmp_path / "run"
  (run / "checkpoints").mkdir(parents=True)
  (run / "config.json").write_text("{}")
  with pytest.raises(util.UsageError, match=r"holds a training workdir \(checkpoints, config.json\) and no record"):
    _write(run, inputs)
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("mine")
  with pytest.raises(util.UsageError, match=r"holds files \(notes.txt\) and no record that test command wrote them"):
    _write(mine, inputs)
  assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]
  assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_two_inputs_of_one_name_and_names_outside_the_folder_are_refused(tmp_path):
  inputs = _inputs(tmp_path, ["a.png", "b.png"])
  with pytest.raises(util.UsageError, match=r"in/a.png and .*in/b.png would both be written to .*out/x.png"):
    _write(tmp_path / "out", [("x.png", inputs[0][1]), ("x.png", inputs[1][1])])
  for name in ("../x.png", "/etc/x.png"):
    with pytest.raises(util.UsageError, match="is not a name inside --out"):
      _write(tmp_path / "out", [(name, inputs[0][1])])
  assert not (tmp_path / "x.png").exists()
