"""The whole experiment config checked in one pass, before any feature extraction or training.

  check_config(config)   # ConfigError listing every problem, one `field: what is wrong (got X)`
                         # line each, e.g. `train.steps: must be >= 1 (got 0)`

Names are checked against the registries at call time, so entries that user code registers
(`CORPORA`, `MODELS`, `SYSTEMS`, `MODES`) are accepted. A field that the config lacks is skipped
(older and partial configs), so the checker itself never fails on a missing field.
"""

import math
import numbers
from typing import Any, List, Sequence

from mmtl_jax.data.corpus import CORPORA
from mmtl_jax.data.iemocap import VAD_NAMES
from mmtl_jax.meta import MODES, STRATEGIES, TASK_REDUCES
from mmtl_jax.models import DTYPES, MODELS
from mmtl_jax.run import errors
from mmtl_jax.ser.evaluate import PROTOCOLS
from mmtl_jax.ser.systems import SYSTEMS

_MISSING = object()

# (field, allowed names): a tuple, or a Registry read at check time.
_ENUMS = (
    ('data.kind', CORPORA), ('model.name', MODELS), ('model.dtype', tuple(DTYPES)),
    ('meta.mode', MODES), ('meta.strategy', STRATEGIES), ('meta.task_reduce', TASK_REDUCES),
    ('features.normalise', ('segment', 'none')), ('folds.scheme', ('session', 'speaker')),
    ('folds.class_weights', ('speaker', 'pooled')), ('folds.dev_gender', ('F', 'M')),
    ('eval.finetune_optimizer', ('sgd', 'adam')),
    ('eval.finetune_unit', ('steps', 'epochs')),
    ('train.on_changed_config', ('error', 'restart')),
)
# (field, allowed names of the entries or None, may be empty); no field may repeat an entry.
_LISTS = (
    ('train.models', SYSTEMS, False), ('eval.protocols', PROTOCOLS, False),
    ('data.classes', None, False), ('data.aux_tasks', None, True),
    ('train.seeds', None, True), ('folds.which', None, True),
)
# (field, smallest allowed integer).
_COUNTS = (
    ('train.steps', 1), ('train.segments_per_speaker', 1), ('train.eval_every', 1),
    ('train.checkpoint_every', 1), ('train.log_every', 1), ('meta.inner_steps', 1),
    ('meta.task_chunk', 0), ('meta.task_groups', 0), ('eval.batch_size', 1),
    ('eval.finetune_steps', 0),
    ('features.sample_rate', 1), ('features.n_fft', 1), ('features.n_frames', 1),
    ('features.workers', 0), ('model.num_outputs', 1),
    ('data.manifest.min_utterances_per_speaker', 1),
)
_POSITIVE = (
    'meta.alpha', 'meta.beta', 'meta.gamma', 'eval.finetune_lr', 'features.hop_ms',
    'features.win_ms', 'features.fmax', 'features.max_segment_s', 'features.log_floor',
)


class ConfigError(errors.ExpectedError, ValueError):
  """Every problem of a config: one line each in the message, and in `problems`."""

  def __init__(self, problems: Sequence[str]):
    self.problems = tuple(problems)
    super().__init__(f'{len(self.problems)} problem(s) in the config:\n'
                     + '\n'.join(self.problems))

  def line(self) -> str:
    """The one line of the entry points' error boundary (run/errors.py)."""
    return (f'{len(self.problems)} problem(s) in the config: ' + '; '.join(self.problems)
            + ', the config file or its --config.* flags, fix those fields')


def check_config(config: Any) -> None:
  """Checks every field that `mmtl_jax.configs.base` defines (see `config_problems`).

  Raises:
    ConfigError: listing all problems at once, one `field: what is wrong (got X)` per line.
  """
  problems = config_problems(config)
  if problems:
    raise ConfigError(problems)


def config_problems(config: Any) -> List[str]:
  """All problems of `config` as `field: what is wrong (got X)` lines; [] if none."""
  out = []
  for field, choices in _ENUMS:
    out += _enum(field, _get(config, field), choices)
  for field, choices, may_be_empty in _LISTS:
    out += _sequence(field, _get(config, field), choices, may_be_empty)
  for field, minimum in _COUNTS:
    out += _count(field, _get(config, field), minimum)
  for field in _POSITIVE:
    out += _positive(field, _get(config, field))
  out += _non_negative('train.report_every_s', _get(config, 'train.report_every_s'))
  out += _class_count(_get(config, 'data.classes'))
  rates = _get(config, 'train.baseline_lr')
  for name, lr in (dict(rates) if rates is not _MISSING and rates else {}).items():
    out += _positive(f'train.baseline_lr.{name}', lr)
  for index in _items(_get(config, 'folds.which')):
    if not _is_int(index) or index < 0:
      out.append(f'folds.which: entries must be fold indices >= 0 (got {index!r})')
  return (out + _output_problems(config) + _corpus_problems(config)
          + _closed_set_problems(config) + _segment_problems(config))


def _get(config: Any, field: str) -> Any:
  """The value at dotted `field`, or _MISSING where the config lacks it (None under meta)."""
  node = config
  for key in field.split('.'):
    if not hasattr(node, 'get'):
      return _MISSING
    node = node.get(key, _MISSING)
    if node is _MISSING:
      return _MISSING
  return _MISSING if node is None and field.startswith('meta.') else node


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _items(value: Any) -> tuple:
  """The entries of a list/tuple field; () when missing or not a sequence."""
  return tuple(value) if isinstance(value, (list, tuple)) else ()


def _names(choices: Any) -> tuple:
  return tuple(choices.names()) if hasattr(choices, 'names') else tuple(choices)


def _enum(field: str, value: Any, choices: Any) -> List[str]:
  if value is _MISSING or value in _names(choices):
    return []
  return [f'{field}: must be one of {_names(choices)} (got {value!r})']


def _sequence(field: str, value: Any, choices: Any, may_be_empty: bool) -> List[str]:
  if value is _MISSING:
    return []
  if not isinstance(value, (list, tuple)):
    return [f'{field}: must be a list or tuple (got {value!r})']
  out = [] if value or may_be_empty else [f'{field}: must not be empty (got {value!r})']
  if choices is not None:
    out += [f'{field}: {v!r} is not one of {_names(choices)} (got {value!r})'
            for v in value if v not in _names(choices)]
  repeated = sorted({repr(v) for v in value if list(value).count(v) > 1})
  if repeated:
    out.append(f'{field}: repeated entries {", ".join(repeated)} (got {value!r})')
  return out


def _count(field: str, value: Any, minimum: int) -> List[str]:
  if value is _MISSING:
    return []
  if not _is_int(value):
    return [f'{field}: must be an integer >= {minimum} (got {value!r})']
  return [f'{field}: must be >= {minimum} (got {value!r})'] if value < minimum else []


def _positive(field: str, value: Any) -> List[str]:
  """A finite number > 0 (a rate of inf trains to nan parameters; nan fails `> 0`)."""
  if value is _MISSING:
    return []
  if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0
      or not math.isfinite(value)):
    return [f'{field}: must be a finite number > 0 (got {value!r})']
  return []


def _non_negative(field: str, value: Any) -> List[str]:
  if value is _MISSING:
    return []
  if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
    return [f'{field}: must be a number >= 0 (got {value!r})']
  return []


def _edges(field: str, edges: Any, num_outputs: Any) -> List[str]:
  """Bin edges: >= 2 increasing numbers, and no more bins than the shared head's outputs."""
  if not isinstance(edges, (list, tuple)) or len(edges) < 2 or not all(
      isinstance(e, numbers.Real) and not isinstance(e, bool) for e in edges):
    return [f'{field}: must be at least 2 numeric bin edges (got {edges!r})']
  if any(b <= a for a, b in zip(edges, edges[1:])):
    return [f'{field}: bin edges must increase (got {edges!r})']
  bins = len(edges) - 1
  if _is_int(num_outputs) and bins > num_outputs:
    return [f'{field}: {bins} bins need model.num_outputs >= {bins}, the shared head has '
            f'{num_outputs} outputs (got {edges!r})']
  return []


def _class_count(classes: Any) -> List[str]:
  """One class makes every prediction right (UA 100): at least two (`_sequence` reports an
  empty list)."""
  if isinstance(classes, (list, tuple)) and len(classes) == 1:
    return [f'data.classes: needs at least 2 classes (got {classes!r})']
  return []


def _output_problems(config: Any) -> List[str]:
  """The emotion classes share the head's model.num_outputs outputs with the aux bins."""
  classes, num_outputs = _get(config, 'data.classes'), _get(config, 'model.num_outputs')
  if _is_int(num_outputs) and len(_items(classes)) > num_outputs:
    return [f'data.classes: {len(classes)} classes need model.num_outputs >= {len(classes)}, '
            f'the shared head has {num_outputs} outputs (got {classes!r})']
  return []


def _corpus_problems(config: Any) -> List[str]:
  """The fields of the corpus that data.kind selects."""
  kind, num_outputs = _get(config, 'data.kind'), _get(config, 'model.num_outputs')
  aux_tasks = _items(_get(config, 'data.aux_tasks'))
  out = []
  if kind in ('iemocap', 'synthetic'):  # one reader for both
    out += _enum('data.iemocap.selection', _get(config, 'data.iemocap.selection'),
                 ('improvised', 'scripted', 'all'))
    out += [f'data.aux_tasks: {t!r} is not one of {VAD_NAMES} for data.kind={kind!r} '
            f'(got {aux_tasks!r})' for t in aux_tasks if t not in VAD_NAMES]
    edges = _get(config, 'data.iemocap.vad_edges')
    if edges is not _MISSING:
      out += _edges('data.iemocap.vad_edges', edges, num_outputs)
  elif kind == 'manifest':
    out += _manifest_problems(config, aux_tasks, num_outputs)
  return out


def _manifest_problems(config: Any, aux_tasks: tuple, num_outputs: Any) -> List[str]:
  """data.manifest: the CSV path, and an aux_columns entry for every aux task in use."""
  out = []
  path = _get(config, 'data.manifest.path')
  if not path or not isinstance(path, str):
    out.append("data.manifest.path: data.kind='manifest' needs the CSV file (got "
               f"{None if path is _MISSING else path!r})")
  columns = _get(config, 'data.manifest.aux_columns')
  columns = dict(columns) if hasattr(columns, 'keys') else {}
  for task in aux_tasks:
    spec = columns.get(task, _MISSING)
    if spec is _MISSING:
      out.append(f'data.manifest.aux_columns: no entry for aux task {task!r} '
                 f'(got {sorted(columns)})')
    elif isinstance(spec, str):
      if spec != 'categorical':
        out.append(f"data.manifest.aux_columns.{task}: must be 'categorical' or bin edges "
                   f'(got {spec!r})')
    else:
      out += _edges(f'data.manifest.aux_columns.{task}', spec, num_outputs)
  return out


def _numbers(config: Any, fields: Sequence[str]) -> Any:
  """The values of `fields` when every one is a finite number > 0 (else None: the checks
  above report them)."""
  values = [_get(config, f) for f in fields]
  if all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0
         and math.isfinite(v) for v in values):
    return values
  return None


def _segment_problems(config: Any) -> List[str]:
  """Feature settings under which no segment can be valid, refused before extraction (else
  every file is 'unreadable', or every segment is shorter than the model can pool and the
  run trains to a chance table): a window longer than n_fft, a hop or segment of no sample,
  and segments whose most frames, min(n_frames, 1 + segment samples // hop), are fewer than
  the 2 ** len(model.conv_features) that the model's 2x2 pools need."""
  values = _numbers(config, ('features.sample_rate', 'features.hop_ms', 'features.win_ms',
                             'features.n_fft', 'features.max_segment_s', 'features.n_frames'))
  if values is None:
    return []
  rate, hop_ms, win_ms, n_fft, max_segment_s, n_frames = values
  hop, win = int(round(hop_ms * rate / 1000)), int(round(win_ms * rate / 1000))
  samples = int(round(max_segment_s * rate))
  out = []
  if win > n_fft:
    out.append(f'features.win_ms: the window of {win} samples ({win_ms} ms) exceeds '
               f'features.n_fft={n_fft}; lower win_ms or raise n_fft (got {win_ms!r})')
  if hop < 1 or samples < 1:
    field, value = ('features.hop_ms', hop_ms) if hop < 1 else ('features.max_segment_s',
                                                                 max_segment_s)
    return out + [f'{field}: less than one sample at features.sample_rate={rate} '
                  f'(got {value!r})']
  frames = min(int(n_frames), 1 + samples // hop)
  pools = _items(_get(config, 'model.conv_features'))
  need = 2 ** len(pools) if all(_is_int(f) for f in pools) else 1
  if frames < need:
    out.append(f'features: a segment has at most {frames} frame(s) (n_frames={n_frames}, '
               f'max_segment_s={max_segment_s}, hop_ms={hop_ms}), fewer than the {need} that '
               f'the model\'s {len(pools)} pooling blocks need; lower features.hop_ms or raise '
               f'features.max_segment_s and features.n_frames (got hop_ms={hop_ms!r})')
  return out


# Closed sets of values that the checks above leave open. Storage dtypes: floats only (an
# integer dtype wraps the negative normalised features, uint8 to 253-255).
_STORAGE_DTYPES = ('float16', 'float32', 'float64')
_BOOLS = ('data.iemocap.merge_exc', 'folds.swap', 'meta.remat', 'meta.log_inner_after')
_SEEDS = ('seed', 'data.synthetic.seed')  # numpy seeds: [0, 2**32)
_MODEL_COUNTS = ('model.lstm_hidden', 'model.fc_hidden')


def _is_seed(value: Any) -> bool:
  return _is_int(value) and 0 <= value < 2**32


def _closed_set_problems(config: Any) -> List[str]:
  """Storage dtype, booleans, seeds, IEMOCAP sessions and the model's shapes."""
  out = _enum('features.dtype', _get(config, 'features.dtype'), _STORAGE_DTYPES)
  for field in _BOOLS:
    value = _get(config, field)
    if value is not _MISSING and not isinstance(value, bool):  # 'False' would be truthy
      out.append(f'{field}: must be True or False (got {value!r})')
  for field in _SEEDS:
    value = _get(config, field)
    if value is not _MISSING and not _is_seed(value):
      out.append(f'{field}: must be an integer in [0, 2**32) (got {value!r})')
  seeds = _items(_get(config, 'train.seeds'))
  if not all(_is_seed(s) for s in seeds):
    out.append(f'train.seeds: entries must be integers in [0, 2**32) (got {seeds!r})')
  if _get(config, 'data.kind') in ('iemocap', 'synthetic'):
    out += _sessions(_get(config, 'data.iemocap.sessions'))
  return out + _model_problems(config)


def _sessions(value: Any) -> List[str]:
  if value is _MISSING:
    return []
  if not isinstance(value, (list, tuple)) or not value:
    return [f'data.iemocap.sessions: must not be empty (got {value!r})']
  if not all(_is_int(s) and 1 <= s <= 5 for s in value):
    return [f'data.iemocap.sessions: entries must be in 1..5 (got {value!r})']
  return _sequence('data.iemocap.sessions', value, None, False)  # repeats


def _model_problems(config: Any) -> List[str]:
  """Dropout in [0, 1), positive widths, one positive (time, freq) kernel per conv block."""
  out = []
  dropout = _get(config, 'model.dropout')
  if dropout is not _MISSING and not (isinstance(dropout, numbers.Real)
                                      and not isinstance(dropout, bool) and 0 <= dropout < 1):
    out.append(f'model.dropout: must be a number in [0, 1) (got {dropout!r})')
  for field in _MODEL_COUNTS:
    out += _count(field, _get(config, field), 1)
  features, kernels = _get(config, 'model.conv_features'), _get(config, 'model.conv_kernels')
  if features is not _MISSING and not (isinstance(features, (list, tuple)) and features and all(
      _is_int(f) and f >= 1 for f in features)):
    out.append(f'model.conv_features: entries must be integers >= 1 (got {features!r})')
  if kernels is not _MISSING and features is not _MISSING and not (
      isinstance(kernels, (list, tuple)) and len(kernels) == len(_items(features)) and all(
          isinstance(k, (list, tuple)) and len(k) == 2 and all(_is_int(n) and n >= 1 for n in k)
          for k in kernels)):
    out.append('model.conv_kernels: one (time, freq) pair of integers >= 1 per entry of '
               f'model.conv_features (got {kernels!r})')
  return out


__all__ = ['check_config', 'config_problems', 'ConfigError']
