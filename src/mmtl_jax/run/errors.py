"""One error boundary for every entry point: an expected error is one line, not a traceback.

  # experiments/x.py
  from mmtl_jax.run import errors
  _CONFIG = errors.define_config_file('config', path, 'Config file.')  # unknown fields: 1 line
  ...
  if __name__ == '__main__':
    errors.run(main)              # absl's app.run(main) inside the boundary

Every config flag defined here comes with `--print_config` (print the resolved config as
JSON, the content of <workdir>/config.json, and exit 0 before any work) and, when the entry
point passes `quick=` (configs.quick.apply), `--quick` (a preset applied to the config file's
config; `--<name>.<field>` overrides given on the command line still win).

An expected error (an `ExpectedError`, a file system refusal: disk full, permission, read-only
file system, a missing file, a bad flag, an unknown config field) prints one line to stderr,

  error: <what>, <which file or field>, <what to do>

and exits non-zero (`ExpectedError.exit_code`, default 1). `--verbose` or the environment
variable MMTL_JAX_VERBOSE=1 prints the traceback before that line. Any other exception is a
bug and keeps its traceback. Ctrl-C prints `interrupted: rerun the same command to resume` and
exits 130. Control characters in the line (names read from files) are escaped (`printable`).
A user's bad file or setting raises `InputError` (or a subclass) where it is found; a tuple
config field given twice on the command line is refused (`repeated_tuple_fields`).
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import sys
import traceback
import unicodedata
from typing import Any, Callable, NoReturn, Optional

VERBOSE_ENV = 'MMTL_JAX_VERBOSE'


class ExpectedError(Exception):
  """An error the user can act on. Its message is the whole story on one line: what is wrong,
  which file or field, what to do (a subclass whose message has several lines defines
  `line()`). Library errors of this kind also derive from it."""
  exit_code = 1


class InputError(ExpectedError, ValueError):
  """A user's file or setting that cannot be used (a malformed manifest, an impossible config
  value), refused where it is found. A ValueError too, for callers that catch those."""


INTERRUPTED_LINE = 'interrupted: rerun the same command to resume'
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def printable(text: str) -> str:
  """`text` with every control and format character (escape sequences, carriage returns,
  bidirectional overrides) written as its Python escape (ESC -> '\\x1b'): names read from
  files (a manifest's speakers, a bundle.json) cannot move the cursor, recolour or rewrite
  what the terminal shows. Printable text, non-ASCII letters included, is unchanged."""
  out = []
  for char in str(text):
    if unicodedata.category(char) in ('Cc', 'Cf', 'Zl', 'Zp'):
      out.append(repr(char)[1:-1])
    else:
      out.append(char)
  return ''.join(out)


# Refusals of the file system, wherever they surface (orbax and numpy wrap them): what to do.
_ENVIRONMENT = {
    errno.ENOSPC: 'no space left on the device: free space (or use another --workdir) and '
                  'start the same command again, it resumes',
    errno.EDQUOT: 'disk quota exceeded: free space (or use another --workdir) and start the '
                  'same command again, it resumes',
    errno.EROFS: 'read-only file system: use a writable --workdir (or copy the run there)',
    errno.EACCES: 'permission denied: fix the permissions or use another path',
    errno.EPERM: 'operation not permitted: fix the permissions or use another path',
}
# Refusals that are expected only as the error itself (inside the library they may be a bug).
_DIRECT = {
    errno.ENOENT: 'no such file or directory: check the path',
    errno.ENOTDIR: 'a path component is a file, not a directory: check the path',
    errno.EISDIR: 'is a directory, a file was expected: check the path',
    errno.EEXIST: 'already exists: remove it or use another path',
}


# The same refusals as text: tensorstore (orbax's writer) reports them in a ValueError.
_SIGNS = (('No space left on device', errno.ENOSPC), ("os_error_code='28'", errno.ENOSPC),
          ('Disk quota exceeded', errno.EDQUOT), ('Read-only file system', errno.EROFS))
_QUOTED_PATH = re.compile(r'["\'](/[^"\']+)["\']')


def _sign(text: str) -> Optional[int]:
  return next((code for sign, code in _SIGNS if sign in text), None)


def _text_line(text: str, code: int) -> str:
  """The one line of a refusal known only from its text: the first quoted path, cut before
  orbax's temporary suffix (the checkpoint step being written)."""
  match = _QUOTED_PATH.search(text)
  where = match.group(1).split('.orbax-checkpoint-tmp')[0] if match else None
  return _os_line(OSError(code, os.strerror(code), where), _ENVIRONMENT[code])


def _config_file_line(error: BaseException) -> Optional[str]:
  """ml_collections' 'Failed loading config file' (raised when the config is first read)."""
  for cause in _chain(error):
    text = str(cause)
    if isinstance(cause, OSError) and text.startswith('Failed loading config file'):
      lines = [l.strip() for l in text.splitlines()[1:] if l.strip()]
      paths = [l for l in lines if l.startswith('/') or l.endswith('.py')]
      return (f'cannot load the config file ({lines[-1] if lines else "?"}), '
              f'{paths[0] if paths else "--config"}, give an existing config file in --config')
  return None


def _config_parse_error(text: str) -> str:
  """A flag error's text as one line; for ml_collections' "Error whilst parsing config file"
  (get_config raised: an unknown variant, a bad argument) the flag and the exception's own
  last line, not the traceback ml_collections pastes into the message."""
  if 'Error whilst parsing config file' not in text or 'Traceback' not in text:
    return one_line(text)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return f'{lines[0].split(": Error whilst", 1)[0]}: {lines[-1]}'


def _chain(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def one_line(text: str) -> str:
  """`text` with its lines joined by '; ' (a ConfigError lists one problem per line)."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return '; '.join(lines)


def _os_line(error: OSError, advice: str) -> str:
  where = error.filename if error.filename is not None else 'a file of the run'
  if error.filename2 is not None:
    where = f'{where} -> {error.filename2}'
  return f'{advice.split(":")[0]}, {where}, {advice.split(": ", 1)[1]}'


def expected_line(error: BaseException) -> Optional[str]:
  """The one line for an expected error (without 'error: '), or None for a bug."""
  if isinstance(error, ExpectedError):
    return error.line() if hasattr(error, 'line') else one_line(error)
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if isinstance(error, app.UsageError):
    return f'{one_line(error)}, the command line, see --helpshort'
  if isinstance(error, flags.Error):
    return f'{_config_parse_error(str(error))}, the command line, see --helpshort'
  if isinstance(error, OSError) and error.errno in _DIRECT:
    return _os_line(error, _DIRECT[error.errno])
  from mmtl_jax import registry  # pylint: disable=g-import-not-at-top
  if isinstance(error, registry.UnknownNameError):
    return f'{one_line(error)}, the config or flags, use one of the known names'
  config_file = _config_file_line(error)
  if config_file:
    return config_file
  for cause in _chain(error):
    if isinstance(cause, OSError) and cause.errno in _ENVIRONMENT:
      return _os_line(cause, _ENVIRONMENT[cause.errno])
    code = _sign(str(cause))
    if code is not None:
      return _text_line(str(cause), code)
  return None


class QuietEnvironmentErrors(logging.Filter):
  """Drops the ERROR records (with tracebacks) that orbax's background threads log for a
  refusal of the file system (disk full, read-only): the main thread raises the same error,
  which the boundary prints as one line. Other records pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += ' ' + ' '.join(str(e) for e in _chain(record.exc_info[1]))
    return _sign(text) is None


class QuietBackendProbe(logging.Filter):
  """Drops JAX's INFO record "Unable to initialize backend 'tpu': ... libtpu.so: cannot open
  shared object file" (jax._src.xla_bridge probes every platform at start): on a machine
  without libtpu it only says there is no TPU. A TPU that fails on a TPU host (busy, driver)
  says something else and keeps its line; a platform asked for explicitly (JAX_PLATFORMS)
  that fails raises, which no filter touches."""

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not (record.levelno <= logging.INFO
                and text.startswith("Unable to initialize backend 'tpu'")
                and 'libtpu.so: cannot open shared object file' in text)


BACKEND_LOGGER = 'jax._src.xla_bridge'


def verbose() -> bool:
  """--verbose on the command line (also before flags are parsed) or MMTL_JAX_VERBOSE=1."""
  if os.environ.get(VERBOSE_ENV, '') not in ('', '0'):
    return True
  return any(a in ('--verbose', '-verbose', '--verbose=true', '--verbose=True')
             for a in sys.argv[1:])


def fail(line: str, exit_code: int = 1) -> NoReturn:
  """Prints 'error: <line>' (one line, control characters escaped) to stderr and exits with
  `exit_code`."""
  sys.stderr.flush()
  print(f'error: {printable(one_line(line))}', file=sys.stderr, flush=True)
  sys.exit(exit_code)


def _fail_if_expected(e: BaseException, exit_code: int) -> None:
  """Exits with e's one line (and, when verbose, its traceback) if e is expected; returns
  otherwise, for the caller to re-raise."""
  line = expected_line(e)
  if line is None:
    return
  if verbose():
    traceback.print_exc()
  fail(line, exit_code)


def boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
  """`fn` (an absl main) with expected errors turned into one line and a non-zero exit."""

  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except KeyboardInterrupt:  # Ctrl-C: one line, not the traceback of wherever it landed
      if verbose():
        traceback.print_exc()
      sys.stderr.flush()
      print(INTERRUPTED_LINE, file=sys.stderr, flush=True)
      sys.exit(INTERRUPTED_EXIT)
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless expected)
      _fail_if_expected(e, getattr(e, 'exit_code', 1) or 1)
      raise

  wrapped.__name__ = getattr(fn, '__name__', 'main')
  wrapped.__doc__ = fn.__doc__
  return wrapped




def _parse_flags(argv):
  """absl's flag parsing with a bad flag as one line (absl prints two)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (re-raised unless expected)
    _fail_if_expected(e, 1)
    raise


def run(fn: Callable[..., Any]) -> None:
  """absl's `app.run(fn)` under the boundary, flag parsing included; defines --verbose."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if 'verbose' not in flags.FLAGS:
    flags.DEFINE_bool('verbose', False, 'On an expected error, print the traceback too '
                      f'(also: {VERBOSE_ENV}=1).')
  if not verbose():  # orbax logs through absl's logger
    logging.getLogger('absl').addFilter(QuietEnvironmentErrors())
    logging.getLogger(BACKEND_LOGGER).addFilter(QuietBackendProbe())
  app.run(boundary(_with_config_flags(fn)), flags_parser=_parse_flags)


# name -> quick preset (or None) of every config flag defined by `define_config_file`.
_CONFIG_FLAGS: dict = {}


def config_json(config: Any) -> str:
  """The resolved config as the JSON text --print_config prints and the training loop writes
  to <workdir>/config.json (tuples as lists; a value with no JSON form as its str)."""
  import json  # pylint: disable=g-import-not-at-top
  return json.dumps(config.to_dict() if hasattr(config, 'to_dict') else config, indent=1,
                    default=str) + '\n'


def apply_preset(config: Any, preset: Callable[[Any], Any], overridden: list) -> None:
  """`preset(config)` in place, then the fields in `overridden` (dotted paths given on the
  command line) set back to their command-line values: an explicit override wins."""
  def get(path):
    node = config
    for part in path.split('.'):
      node = node[part]
    return node

  kept = {}
  for path in overridden:
    try:
      kept[path] = get(path)
    except (KeyError, AttributeError, TypeError):  # an override the preset cannot touch
      continue
  preset(config)
  for path, value in kept.items():
    parent, _, leaf = path.rpartition('.')
    (get(parent) if parent else config)[leaf] = value


def _with_config_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
  """fn after the config flags' --quick and --print_config have been served."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def wrapped(argv):
    values = flags.FLAGS
    for name, quick in _CONFIG_FLAGS.items():
      if quick is not None and values['quick'].value:
        apply_preset(values[name].value, quick, _overrides(name, sys.argv[1:]))
    if _CONFIG_FLAGS and values['print_config'].value:
      for name in _CONFIG_FLAGS:
        sys.stdout.write(config_json(values[name].value))
      sys.stdout.flush()
      return None
    return fn(argv)

  wrapped.__name__ = getattr(fn, '__name__', 'main')
  wrapped.__doc__ = fn.__doc__
  return wrapped


def _field_paths(config: Any, prefix: str = '') -> set:
  """Every dotted field of a ConfigDict, sub-dicts included (overriding a whole one is fine)."""
  out = set()
  for key, value in config.items():
    out.add(prefix + key)
    if hasattr(value, 'items') and not isinstance(value, dict):
      out |= _field_paths(value, f'{prefix}{key}.')
  return out


def _overrides(name: str, argv: list) -> list:
  """The field paths of `--name.path=...` / `--name.path ...` arguments."""
  out = []
  for arg in argv:
    for dashes in ('--', '-'):
      if arg.startswith(f'{dashes}{name}.'):
        out.append(arg[len(dashes) + len(name) + 1:].split('=', 1)[0].split('[', 1)[0])
        break
  return out


def _config_file_arg(name: str, default: str, argv: list) -> str:
  for i, arg in enumerate(argv):
    for dashes in ('--', '-'):
      if arg.startswith(f'{dashes}{name}='):
        return arg.split('=', 1)[1]
      if arg == f'{dashes}{name}' and i + 1 < len(argv):
        return argv[i + 1]
  return default


def _load_config(name: str, path: str) -> Any:
  """The config file's config without overrides, or None when it cannot be loaded (then
  ml_collections' own parse reports that)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  scratch = flags.FlagValues()
  try:
    config_flags.DEFINE_config_file(name, path, flag_values=scratch, sys_argv=['prog'])
    scratch(['prog'])
    return scratch[name].value
  except Exception:  # pylint: disable=broad-except  (the real parse reports it)
    return None


def unknown_fields(name: str, default: str, argv: list) -> list:
  """One line per `--name.<field>` override naming no field of the config file, with the
  close matches (difflib)."""
  overrides = _overrides(name, argv)
  path = _config_file_arg(name, default, argv)
  config = _load_config(name, path) if overrides else None
  if config is None:
    return []
  known = _field_paths(config)
  lines = []
  for field in overrides:
    if field in known:
      continue
    close = difflib.get_close_matches(field, sorted(known), n=3, cutoff=0.6)
    if not close:  # the fields next to it
      parent = field.rsplit('.', 1)[0] + '.' if '.' in field else ''
      close = sorted(k for k in known if k.startswith(parent) and '.' not in k[len(parent):])
    hint = ', '.join(f'--{name}.{c}' for c in close[:8]) or 'none'
    lines.append(f'unknown config field --{name}.{field} (close matches: {hint}), '
                 f'{path}, use a field that file defines')
  return lines


def _get_field(config: Any, path: str) -> Any:
  node = config
  for part in path.split('.'):
    node = node[part]
  return node


def repeated_tuple_fields(name: str, default: str, argv: list) -> list:
  """One line per tuple field given more than once (`--name.folds.which='(7,)'
  --name.folds.which='(0,)'`): ml_collections joins the values into (7, 0), while a scalar
  given twice takes the last; either reading would surprise someone, so it is refused."""
  overrides = _overrides(name, argv)
  repeated = sorted({f for f in overrides if overrides.count(f) > 1})
  config = _load_config(name, _config_file_arg(name, default, argv)) if repeated else None
  if config is None:
    return []
  lines = []
  for field in repeated:
    try:
      value = _get_field(config, field)
    except (KeyError, AttributeError, TypeError):
      continue
    if isinstance(value, (tuple, list)):
      lines.append(f'--{name}.{field} given {overrides.count(field)} times (a tuple field: '
                   'the values would be joined, not replaced), the command line, give it '
                   f"once with every value, e.g. --{name}.{field}='(0, 1)'")
  return lines


def define_config_file(name: str, default: str, help_string: str,
                       quick: Optional[Callable[[Any], Any]] = None, **kwargs) -> Any:
  """ml_collections' `config_flags.DEFINE_config_file`, but an override that names no field
  of the config (`--config.meta.foo=1`) is one line with the close matches and exit status 1
  (ml_collections raises a three-part traceback while the module is imported).

  Also defines --print_config (print the resolved config as JSON and exit, see `run`) and,
  with `quick` (a function that changes a config in place, e.g. configs.quick.apply), --quick.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  lines = (unknown_fields(name, default, sys.argv[1:])
           + repeated_tuple_fields(name, default, sys.argv[1:]))
  if lines:
    fail(lines[0])
  if 'print_config' not in flags.FLAGS:
    flags.DEFINE_bool('print_config', False, 'Print the resolved config (the config file, '
                      'then --quick, then the --config.* overrides) as JSON and exit.')
  if quick is not None and 'quick' not in flags.FLAGS:
    flags.DEFINE_bool('quick', False, 'A quick try on any config: one fold, few steps, all '
                      'systems (mmtl_jax.configs.quick); --config.* overrides still apply.')
  _CONFIG_FLAGS[name] = quick
  return config_flags.DEFINE_config_file(name, default, help_string, **kwargs)


__all__ = [
    'apply_preset', 'BACKEND_LOGGER', 'boundary', 'config_json', 'define_config_file',
    'expected_line', 'ExpectedError', 'fail', 'InputError', 'INTERRUPTED_EXIT',
    'INTERRUPTED_LINE', 'one_line', 'printable', 'QuietBackendProbe', 'QuietEnvironmentErrors',
    'repeated_tuple_fields', 'run', 'unknown_fields', 'verbose', 'VERBOSE_ENV',
]
