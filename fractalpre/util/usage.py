"""One-line usage errors: a user's mistake (a bad flag, config or folder) is one line on stderr and exit
status 2, never a traceback; the argparse every command line and script shares."""
from __future__ import annotations

import argparse
import contextlib
import sys


class UsageError(ValueError):
  """A user's mistake (a bad flag, config or folder): command lines print it as one line, exit 2."""


@contextlib.contextmanager
def usage_errors(prefix: str = ""):
  """Inside, a ValueError comes from validating the user's input: re-raise it as a UsageError. Wrap only
  code that reads configs and arguments, never computation (a shape bug is not the user's mistake)."""
  try:
    yield
  except UsageError:
    raise
  except ValueError as e:
    raise UsageError(f"{prefix}{e}") from e


@contextlib.contextmanager
def one_line_exits(prog: str, stops: tuple = (), resumes: bool = False):
  """The one way every command line and script ends on a user's mistake: inside, a UsageError is one line
  and exit 2, Ctrl-C one line and exit 130 (saying that the same command continues, where it does:
  `resumes`), and each (exception type, exit status) of `stops` (the caller's own ends: a diverged run 1, a
  preemption 143) its message in one line with that status. Anything else is a bug and keeps its traceback."""
  try:
    yield
  except UsageError as e:
    raise SystemExit(fail(f"{prog}: error: {e}")) from None
  except KeyboardInterrupt:
    print(f"{prog}: interrupted{'; the same command continues where it stopped' if resumes else ''}",
          file=sys.stderr)
    raise SystemExit(130) from None
  except Exception as e:
    status = next((code for kind, code in stops if isinstance(e, kind)), None)
    if status is None:
      raise
    print(f"{prog}: {'error: ' if status == 1 else ''}{e}", file=sys.stderr, flush=True)
    raise SystemExit(status) from None


def fail(message: str) -> int:
  """Prints one line to stderr; returns the usage-error exit status, 2."""
  print(message, file=sys.stderr)
  return 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """--help keeps the description's layout and shows each flag's default, unless the help line already
  says it or there is none to show (None: decided elsewhere, said in the help; False: a switch)."""

  def _get_help_string(self, action):
    text = action.help or ""
    if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
      return text
    return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
  """argparse that reports a usage error as one line, without the usage block, and exits with 2; --help
  shows the defaults."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", HelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message):
    raise SystemExit(fail(f"{self.prog}: error: {message}"))


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
  """One usage line (exit 2) for the first of these integer flags below 1."""
  for name in names:
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
