"""A table's provenance names the commit it was measured at, and says when the tree had changes."""
import subprocess

from fractalpre.studies import machine


def test_the_commit_of_a_checkout_and_its_changes(tmp_path):
  assert machine.commit(tmp_path) == "no git checkout"
  git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,
                                  check=True, capture_output=True, text=True).stdout.strip()
  git("init", "-q")
  (tmp_path / "a.py").write_text("x = 1\n")
  git("add", "a.py")
  git("commit", "-qm", "a")
  head = git("rev-parse", "--short", "HEAD")
  assert machine.commit(tmp_path) == head
  (tmp_path / "untracked.txt").write_text("results")  # outputs beside the code are not changes to it
  assert machine.commit(tmp_path) == head
  (tmp_path / "a.py").write_text("x = 2\n")
  assert machine.commit(tmp_path) == f"{head}+changes"
  assert machine.stamp().split(", ")[1].startswith("commit ")


def test_the_cpu_is_named_with_its_widest_vector_extension():
  info = lambda flags: f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\nmodel name\t: X\n"
  assert machine.cpu(info("fpu avx avx2 fma avx512f avx512bw")) == "AMD EPYC (AVX-512)"
  assert machine.cpu(info("fpu avx fma avx2 sha_ni")) == "AMD EPYC (AVX2)"
  assert machine.cpu(info("fpu sse4_2")) == "AMD EPYC"  # the first processor's fields, no extension to name
  assert machine.describe().endswith(f"cores, Python {__import__('platform').python_version()}")
