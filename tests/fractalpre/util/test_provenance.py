"""The one fingerprint mechanism: equal inputs reuse, any changed input does not, and what changed is named."""
import os

import numpy as np

from fractalpre.util import provenance


def _record(tmp_path, **config):
  table = tmp_path / "scores.csv"
  return provenance.fingerprint({"min_quality": 80, **config}, {"scores": provenance.file_digest(table)})


def test_equal_inputs_reuse_and_each_change_is_named(tmp_path, monkeypatch):
  (tmp_path / "scores.csv").write_text("path\na.png\n")
  out = tmp_path / "out"
  out.mkdir()
  assert provenance.read(out) is None
  provenance.write(out, _record(tmp_path))
  check = lambda record, ignore=(): provenance.differences(provenance.read(out), record, ignore)
  assert check(_record(tmp_path)) == []
  # a setting
  assert check(_record(tmp_path, min_quality=90)) == ["min_quality: 80 -> 90"]
  # an ignored setting, and a key added since that is off
  assert check(_record(tmp_path, min_quality=90), ignore=("min_quality",)) == []
  assert check(_record(tmp_path, dedup=None)) == []
  # the input's bytes (a touch alone changes nothing)
  os.utime(tmp_path / "scores.csv", ns=(1, 1))
  assert check(_record(tmp_path)) == []
  (tmp_path / "scores.csv").write_text("path\nb.png\n")
  [change] = check(_record(tmp_path))
  assert change.startswith("scores: ") and " -> " in change
  # the package version
  (tmp_path / "scores.csv").write_text("path\na.png\n")
  monkeypatch.setattr("fractalpre.__version__", "9.9")
  assert check(_record(tmp_path)) == ['package version: "0.1.0" -> "9.9"']
  # a damaged record is no record
  (out / provenance.FILE).write_text("{not json")
  assert provenance.read(out) is None


def test_listing_digest_sees_added_removed_renamed_and_rewritten_files(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x.png").write_bytes(b"1")
  first = provenance.listing_digest(tmp_path)
  (tmp_path / ".lock").write_text("123")  # a lock, a hidden file or an output folder's record is not part of it
  (tmp_path / provenance.OUTPUT_MANIFEST).write_text("{}")
  assert provenance.listing_digest(tmp_path) == first
  (tmp_path / "a" / "y.png").write_bytes(b"2")
  added = provenance.listing_digest(tmp_path)
  (tmp_path / "a" / "y.png").rename(tmp_path / "a" / "z.png")
  renamed = provenance.listing_digest(tmp_path)
  (tmp_path / "a" / "z.png").write_bytes(b"22")
  rewritten = provenance.listing_digest(tmp_path)
  (tmp_path / "a" / "z.png").unlink()
  assert len({first, added, renamed, rewritten}) == 4 and provenance.listing_digest(tmp_path) == first


def test_arrays_digest_sees_one_bit_a_shape_and_a_dtype():
  a = np.arange(6, dtype=np.float32)
  base = provenance.arrays_digest([("w", a)])
  flipped = a.copy()
  flipped.view(np.uint32)[3] ^= 1
  assert provenance.arrays_digest([("w", a.copy())]) == base
  assert len({base, provenance.arrays_digest([("w", flipped)]), provenance.arrays_digest([("w", a.reshape(2, 3))]),
              provenance.arrays_digest([("w", a.astype(np.float64))]), provenance.arrays_digest([("v", a)])}) == 5
