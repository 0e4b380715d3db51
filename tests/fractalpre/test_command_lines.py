"""Every command line (the two CLIs, scripts/, benchmarks/) speaks one style: hyphenated flags, a help
line for each, defaults shown by --help."""
import argparse
import sys
from pathlib import Path

import pytest

from fractalpre import cli
from superres import cli as superres_cli
from tests.fractalpre import scripts

ROOT = Path(__file__).parents[2]
FILES = sorted(p.relative_to(ROOT) for folder in ("scripts", "benchmarks") for p in (ROOT / folder).glob("*.py"))


class _Parsed(Exception):
  def __init__(self, parser):
    self.parser = parser


def _parser_of(main, monkeypatch, argv0):
  """The parser a main() builds, caught at parse_args, before it does any work."""
  def capture(self, *args, **kwargs):
    raise _Parsed(self)
  monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
  monkeypatch.setattr(sys, "argv", [argv0])
  with pytest.raises(_Parsed) as caught:
    main()
  return caught.value.parser


def _all_parsers(parser):
  yield parser
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      for sub in action.choices.values():
        yield from _all_parsers(sub)


def _check(parser):
  for p in _all_parsers(parser):
    assert p.formatter_class.__name__ == "HelpFormatter", p.prog
    for action in p._actions:
      if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
        continue
      name = "/".join(action.option_strings) or action.dest
      assert action.help, f"{p.prog} {name} has no help line"
      for flag in action.option_strings:
        assert "_" not in flag, f"{p.prog} {flag}: flags use hyphens"
    help_text = p.format_help()
    assert "(default: None)" not in help_text and "default: False" not in help_text, p.prog


@pytest.mark.parametrize("main,name", [(cli.main, "fractalpre"), (superres_cli.main, "superres")])
def test_the_clis(main, name, monkeypatch):
  _check(_parser_of(main, monkeypatch, name))


@pytest.mark.parametrize("path", FILES, ids=str)
def test_scripts_and_benchmarks(path, monkeypatch):
  if path.parts[0] == "benchmarks":
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
  module = scripts.load_file(ROOT / path)
  _check(_parser_of(module.main, monkeypatch, path.name))


def test_help_shows_defaults():
  from fractalpre import util
  parser = util.ArgumentParser(prog="x")
  parser.add_argument("--count", type=int, default=16, help="samples")
  parser.add_argument("--classes", type=int, default=None, help="categories (default 1000)")
  text = parser.format_help()
  assert "samples (default: 16)" in text and "categories (default 1000)\n" in text
