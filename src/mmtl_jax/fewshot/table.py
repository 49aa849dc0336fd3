"""The few-shot table as a resumable run (what experiments/fewshot.py calls): the records of
`experiment.run` / `experiment.search` kept by the runner (run/runner.py), and fewshot.json /
fewshot.md (search.json / search.md) written from them; the memory measurement; the merge of
several runs' JSON files.

Layout of the store directory (--workdir, else the folder of --json)::

  records/<fingerprint>.json   one per finished record (table and search), never dropped
  .mmtl_jax.lock               held while a run uses it: a second run is refused in one line
  fewshot.json, fewshot.md     the table: every stored record that the CURRENT config would
                               produce for its (method, way, shot, seed), in table order

So a rerun with a subset of --methods (or of --ways/--shots/--seeds) computes only what is
missing and still shows the others' records; a rerun under a changed config keeps the old
records in records/ (their fingerprint differs) and shows those of the current config;
interrupting a run loses only the record in progress. fewshot.json's `complete` says whether
every record this command asked for is in it.
"""

import contextlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from mmtl_jax.fewshot import experiment, report
from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import progress as progress_lib
from mmtl_jax.run import runner
from mmtl_jax.run import stats


def apply_flags(config: Any, ways: Sequence[str] = (), shots: Sequence[str] = (),
                seed: Optional[int] = None, seeds: Optional[int] = None,
                diagnostics_every: Optional[int] = None) -> Any:
  """`config` with the command line's --ways/--shots/--seed/--seeds/--diagnostics_every
  (those given) set, then checked: one error line naming the field before any rendering.

  Raises:
    errors.ExpectedError: a value that is not an integer, or settings that do not fit.
  """
  if ways or shots:
    try:
      config.ways = tuple(int(w) for w in (ways or config.ways))
      config.shots = tuple(int(s) for s in (shots or config.shots))
    except ValueError as e:
      raise errors.ExpectedError(f'{e}, --ways or --shots, give integers, e.g. --ways=5,20 '
                                 '--shots=1,5') from e
  if seed is not None:
    config.seed = seed
  if seeds is not None:
    config.seeds = seeds
  if diagnostics_every is not None:
    config.diagnostics_every = diagnostics_every
  return config


def check(config: Any, methods: Sequence[str]) -> None:
  """Settings, seeds and method names, before any rendering or compiling.

  Raises:
    errors.ExpectedError: one line naming the field.
  """
  try:
    experiment.settings_of(config)
    experiment.seeds_of(config)
    experiment.check_methods(methods or tuple(config.methods))
  except ValueError as e:
    raise errors.ExpectedError(f'{e} (config or --methods/--ways/--shots/--seeds)') from e


def _fingerprint_of(config: Any, kind: str):
  """key -> the fingerprint the current config gives that unit (None: not of `kind`, or a
  method the config no longer has)."""
  def of(key: Dict[str, Any]) -> Optional[str]:
    if key.get('kind') != kind:
      return None
    try:
      if kind == 'test':
        unit = experiment.test_unit(config, key['method'], key['way'], key['shot'],
                                    key['seed'])
      else:
        unit = experiment.search_unit(config, key['method'], key['way'], key['overrides'])
    except (KeyError, AttributeError, ValueError, TypeError):
      return None
    return unit.fingerprint
  return of


def stored(held: runner.Runner, config: Any, kind: str) -> Optional[List[Dict[str, Any]]]:
  """Every stored record of `kind` ('test' or 'search') that the current config would
  produce, in table order (None without a store)."""
  if held.store is None:
    return None
  records = held.store.matching(_fingerprint_of(config, kind))
  return experiment.table_order(records) if kind == 'test' else records


# What the merge and its table read of every record: name -> the type it must have.
_RECORD_FIELDS = {'method': str, 'way': int, 'shot': int, 'seed': int, 'accuracy': float,
                  'ci95': float, 's_per_iter': float, 'peak_mem_mb': float}


def _record_problem(record: Any) -> str:
  """What makes `record` unusable for the merge ('' if nothing)."""
  if not isinstance(record, dict):
    return f'a record is {type(record).__name__}, not an object'
  for name, kind in _RECORD_FIELDS.items():
    value = record.get(name)
    numeric = kind is not str and isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str and not isinstance(value, str) or kind is not str and not (
        numeric and (kind is float or float(value).is_integer())):
      return f'record {record.get("method")!r} has {name}={value!r}, not a {kind.__name__}'
  return ''


def _merge_input(path: str) -> list:
  """The records of one --merge file, each with what the merge reads.

  Raises:
    errors.ExpectedError (one line): unreadable, not JSON, no 'records' list, or a record
    without a field the merge reads (method, way, shot, seed, accuracy, ci95, s_per_iter,
    peak_mem_mb), naming the file.
  """
  try:
    with open(path, encoding='utf-8') as f:
      content = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.ExpectedError(f'not a fewshot JSON ({type(e).__name__}: {e}), {path}, give '
                               'the fewshot.json of a run in --merge') from None
  records = content.get('records') if isinstance(content, dict) else None
  problem = ('no list of records' if not isinstance(records, list) else
             next((p for p in map(_record_problem, records) if p), ''))
  if problem:
    raise errors.ExpectedError(f'not a fewshot JSON ({problem}), {path}, give the '
                               'fewshot.json of a run in --merge')
  return records


def merge(paths: Sequence[str], json_path: str = '', md_path: str = '') -> str:
  """One table from several runs' JSON files (returned, and written to json_path / md_path
  where given). A later file wins: for each (method, way, shot), records whose settings
  differ from the later file's are dropped (and listed), as is an earlier record of the same
  seed.

  Raises:
    errors.ExpectedError: a file that is not a fewshot JSON (`_merge_input`).
  """
  records = [_merge_input(path) for path in paths]
  kept, dropped = experiment.merge_records(records)
  for r in dropped:
    print(f"dropped: {r['method']} {r['way']}-way {r['shot']}-shot seed {r['seed']} "
          f"(settings {r.get('settings')} replaced by a later file's)")
  result = {'records': kept, 'accuracy_unit': experiment.ACCURACY_UNIT,
            'merged_from': list(paths)}
  text = report.markdown(result)
  if json_path:
    files.atomic_write_json(json_path, files.to_jsonable(dict(
        result, rows=stats.aggregate(kept), complete=True)))
  if md_path:
    files.atomic_write_text(md_path, text)
  return text


def memory(config: Any, json_path: str = '', md_path: str = '') -> str:
  """The meta-gradient memory against the inner steps (`experiment.meta_gradient_memory`),
  as markdown (returned, and written where given)."""
  rows = experiment.meta_gradient_memory(config)
  text = report.memory_markdown(rows)
  if json_path:
    files.atomic_write_json(json_path, files.to_jsonable({'rows': rows, 'config': config}))
  if md_path:
    files.atomic_write_text(md_path, text)
  return text


def outputs(workdir: str, json_path: str, md_path: str, stem: str) -> Dict[str, str]:
  """{'json', 'md', 'diagnostics', 'store'}: the given paths, else <workdir>/<stem>.json /
  .md ('' where neither is given); the store is the workdir, else the folder of the JSON
  ('' when there is neither: nothing is kept)."""
  if workdir:
    os.makedirs(workdir, exist_ok=True)
  at = lambda name: os.path.join(workdir, name) if workdir else ''
  json_path = json_path or at(f'{stem}.json')
  store = workdir or (os.path.dirname(os.path.abspath(json_path)) if json_path else '')
  return {'json': json_path, 'md': md_path or at(f'{stem}.md'),
          'diagnostics': at('diagnostics'), 'store': store}


def run_table(config: Any, *, workdir: str = '', json_path: str = '', md_path: str = '',
              methods: Sequence[str] = (), search: bool = False, quick: bool = False) -> str:
  """The table (or, with `search`, the validation search) as a resumable run; returns its
  markdown, also written to the md path (see `outputs`), its records to the JSON path.

  Raises:
    lock.WorkdirLockedError: another run holds the store directory (one line).
  """
  check(config, methods)
  paths = outputs(workdir, json_path, md_path, 'search' if search else 'fewshot')
  if workdir:  # identical programs across seeds and resumed runs compile once
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  log = (progress_lib.log_to(os.path.join(workdir, 'fewshot.log')) if workdir
         else contextlib.nullcontext())
  with log, runner.Runner(paths['store'] or None) as held:
    return _run(config, held, paths, list(methods), search, quick)


def _run(config, held, paths, methods, search, quick) -> str:
  """The body of `run_table`, under the store's lock."""
  kind, field = ('search', 'points') if search else ('test', 'records')
  bars = lambda what, units, pending: progress_lib.Progress(
      what, units, pending=pending, every_s=progress_lib.interval(config))

  units = (experiment.search_units if search else experiment.test_units)(config,
                                                                         methods or None)

  def save(result: Dict[str, Any], complete: bool) -> Dict[str, Any]:
    table = stored(held, config, kind)
    result = dict(result, **{field: result.get(field, []) if table is None else table})
    if search:  # the choice over every kept point of the current config
      result['chosen'] = experiment.choose(result['points'])
    if paths['json']:
      files.atomic_write_json(paths['json'], files.to_jsonable(dict(
          result, config=config, quick=quick, complete=complete,
          rows=stats.aggregate(result.get('records', [])))))  # NaN -> null
    return result

  # Complete once every unit asked for has its record: a rerun of a finished table stays
  # complete however early it is stopped.
  partial = lambda done: save({field: done}, held.store is not None and all(
      os.path.isfile(held.store.path(u)) for u in units))
  if search:
    result = experiment.search(config, methods or None, progress=bars, on_point=partial,
                               held=held)
    text = report.search_markdown(save(result, True))
  else:
    make_hook = None
    if int(config.diagnostics_every) > 0:
      from mmtl_jax.fewshot import diagnostics  # pylint: disable=g-import-not-at-top
      make_hook = diagnostics.hook_factory(config, paths['diagnostics'] or '.')
    result = experiment.run(config, methods or None, progress=bars, make_hook=make_hook,
                            on_record=partial, held=held)
    text = report.markdown(save(result, True))
  print(text)
  if paths['md']:
    files.atomic_write_text(paths['md'], text)
  return text


__all__ = ['apply_flags', 'check', 'memory', 'merge', 'outputs', 'run_table', 'stored']
