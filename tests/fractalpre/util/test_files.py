import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fractalpre import util


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "table.csv"
  target.write_text("old")
  util.temporary_name(target).write_text("a killed attempt's leftover")
  with pytest.raises(OSError):
    with util.atomic_path(target) as tmp:
      assert not tmp.exists()  # the leftover was cleared first
      tmp.write_text("half of the new")
      raise OSError("disk full")
  assert target.read_text() == "old" and os.listdir(tmp_path) == ["table.csv"]
  util.write_atomic(target, "new")
  assert target.read_text() == "new" and os.listdir(tmp_path) == ["table.csv"]


def test_a_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
  code = f"from fractalpre import util; import time; util.FolderLock({str(tmp_path)!r}, 'job').acquire(); " \
         "print('held', flush=True); time.sleep(600)"
  holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(util.UsageError, match=rf"in use by another job \(pid {holder.pid}, holding \.lock\)"):
    util.FolderLock(tmp_path, "job").acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  deadline = time.time() + 10
  lock = util.FolderLock(tmp_path, "job")
  lock.acquire()  # the kernel dropped the dead holder's lock
  assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
  with pytest.raises(util.UsageError):
    util.FolderLock(tmp_path, "job").acquire()
  assert util.FolderLock(tmp_path, "job", part="shard-1-of-2").acquire() is not None  # another part is free
  lock.release()
  assert not (tmp_path / ".lock").exists() and time.time() < deadline


def test_image_grid_places_each_image_in_its_cell():
  images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3) * 3
  grid = util.image_grid(images, border=1)  # 3 columns, 2 rows of 4 x 5 cells
  assert grid.shape == (8, 15)
  for j, image in enumerate(images):
    r, c = divmod(j, 3)
    np.testing.assert_array_equal(grid[4 * r + 1:4 * r + 3, 5 * c + 1:5 * c + 4], image)
  assert (grid[4:, 10:] == 255).all()  # the empty sixth cell
  assert util.image_grid(images[:2], cols=8).shape == (2, 6)


def test_check_writable_refuses_before_any_work(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(util.UsageError, match=r"--out .*file/x.csv cannot be created: .*file is not a folder"):
    util.check_writable(tmp_path / "file" / "x.csv", "--out")
  with pytest.raises(util.UsageError, match="is a folder; give a file name"):
    util.check_writable(tmp_path, "--out")
  util.check_writable(tmp_path / "new" / "x.csv", "--out")
  assert sorted(os.listdir(tmp_path)) == ["file"]  # the probe leaves nothing
