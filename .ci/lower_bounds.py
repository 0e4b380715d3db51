"""Prints pyproject.toml's dependencies (and the dev extra) pinned at their declared lower bounds, one
requirement per line, for the lower-bound test environment (`make test-lower-bounds`)."""
import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
  match = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([0-9.]+)", requirement.replace(" ", ""))
  if not match:
    sys.exit(f"lower_bounds.py: {requirement!r} has no plain '>=' lower bound")
  print(f"{match[1]}=={match[2]}")
