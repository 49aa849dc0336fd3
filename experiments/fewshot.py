r"""Few-shot classification of procedurally generated glyphs (Omniglot-like) with six
meta-learners of the meta library (maml, fomaml, reptile, imaml, meta_sgd, anil) and two
trivial baselines (nearest_centroid on pixels, finetune: the network without meta-training).

The alphabet: 1,000 random stroke characters x 4 rotations = 4,000 classes, 20 jittered
28x28 drawings each, split by character 70/10/20 (train / validation / test). Model: Finn et
al. (2017)'s Omniglot Conv4 with transductive BatchNorm. One record per seed x method x
(way, shot): {method, way, shot, seed, accuracy, ci95, accuracy_unit ('percent'),
per_episode, s_per_iter, peak_mem_mb (peak RSS, psutil), settings, ...}.

  python experiments/fewshot.py --workdir=runs/fewshot                   # full table
  python experiments/fewshot.py --quick                                  # < 10 min, 2 cores
  python experiments/fewshot.py --search --workdir=runs/search           # validation search
  python experiments/fewshot.py --memory --workdir=runs/memory           # memory vs steps
  python experiments/fewshot.py --methods=maml,fomaml --ways=20 --shots=1 --seeds=3
  python experiments/fewshot.py --merge=runs/a/fewshot.json,runs/b/fewshot.json --md=t.md

--quick runs 5-WAY 1-SHOT ONLY, one seed, 100 meta-iterations and 100 test episodes (same
alphabet, model and validated method settings): the same as
--config=src/mmtl_jax/configs/fewshot.py:quick; --config.* overrides apply on top.
Rerun the same command to resume: records already in the JSON (same config) are kept.
With --workdir, compiled XLA programs are cached in <workdir>/xla_cache, so later seeds and
resumed runs skip most compilation.
"""

import contextlib
import json
import os

from absl import flags

from mmtl_jax.configs import config_path
from mmtl_jax.configs import fewshot as fewshot_config
from mmtl_jax.fewshot import experiment, report
from mmtl_jax.run.files import atomic_write_json, atomic_write_text, to_jsonable
from mmtl_jax.run import errors
from mmtl_jax.run import progress as progress_lib
from mmtl_jax.run import stats

FLAGS = flags.FLAGS
flags.DEFINE_bool('quick', False, 'the < 10 minute run on 2 cores: 5-way 1-shot, one seed '
                  '(configs/fewshot.py:quick); --config.* overrides still apply')
errors.define_config_file('config', config_path('fewshot'), 'few-shot config file',
                          quick=fewshot_config.quick)  # idempotent
flags.DEFINE_string('json', '', 'write {"records": [...]} here, rewritten after every record '
                    '("complete": false until the end); default <workdir>/fewshot.json')
flags.DEFINE_string('md', '', 'write the markdown table here (default: <workdir>/fewshot.md '
                    'when --workdir is set)')
flags.DEFINE_list('methods', [], 'methods to run (default: config.methods, all six)')
flags.DEFINE_list('ways', [], 'ways, paired with --shots (default: config.ways)')
flags.DEFINE_list('shots', [], 'shots, paired with --ways (default: config.shots)')
flags.DEFINE_integer('seed', None, 'first training seed (init, episodes); the alphabet keeps '
                     'config.data.seed')
flags.DEFINE_integer('seeds', None, 'number of meta-training seeds (default config.seeds)')
flags.DEFINE_bool('search', False, 'run the validation search (config.search) instead of the '
                  'table: scores on validation characters only; writes search.json/md')
flags.DEFINE_bool('memory', False, 'measure the compiled meta-gradient memory of maml and '
                  'imaml against the inner steps (1, 5, 10, 20); writes memory.json')
flags.DEFINE_list('merge', [], 'JSON files of earlier runs: write their records as one table '
                  '(--md / --json) and exit')
flags.DEFINE_string('workdir', '', 'folder for the outputs (created)')
flags.DEFINE_integer('diagnostics_every', None, 'every N outer steps, compare first-order, '
                     'Reptile and implicit meta-gradients with the exact one (JSON + PNG)')


def _config():
  config = FLAGS.config  # --quick already applied (errors.define_config_file)
  if FLAGS.ways or FLAGS.shots:
    try:
      config.ways = tuple(int(w) for w in (FLAGS.ways or config.ways))
      config.shots = tuple(int(s) for s in (FLAGS.shots or config.shots))
    except ValueError as e:
      raise errors.ExpectedError(f'{e}, --ways or --shots, give integers, e.g. --ways=5,20 '
                                 '--shots=1,5') from e
  if FLAGS.seed is not None:
    config.seed = FLAGS.seed
  if FLAGS.seeds is not None:
    config.seeds = FLAGS.seeds
  if FLAGS.diagnostics_every is not None:
    config.diagnostics_every = FLAGS.diagnostics_every
  return config


def _is_quick():
  return FLAGS.quick or FLAGS['config'].config_filename.endswith(':quick')


def _paths(stem):
  if FLAGS.workdir:
    os.makedirs(FLAGS.workdir, exist_ok=True)
  at = lambda name: os.path.join(FLAGS.workdir, name) if FLAGS.workdir else ''
  return FLAGS.json or at(f'{stem}.json'), FLAGS.md or at(f'{stem}.md'), at('diagnostics')


def _earlier(json_path, config, key):
  """Records of an interrupted run at json_path with the same config (else [])."""
  if not json_path or not os.path.exists(json_path):
    return []
  try:
    with open(json_path) as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.ExpectedError(f'{json_path}: unreadable ({e}); move it aside to start '
                               'again') from e
  if old.get('config') != to_jsonable(config):
    raise errors.ExpectedError(f'{json_path} holds a run of another config; use another '
                               '--workdir or --json, or move it aside')
  return [] if old.get('complete') else list(old.get(key, []))


def _merge():
  """One table from several runs' JSON files. A later file wins: for each (method, way,
  shot), records whose settings differ from the later file's are dropped (and listed), as
  is an earlier record of the same seed."""
  records = []
  for path in FLAGS.merge:
    try:
      with open(path) as f:
        records.append(json.load(f)['records'])
    except (OSError, ValueError, KeyError) as e:
      raise errors.ExpectedError(f'--merge {path}: not a fewshot JSON ({e})') from e
  kept, dropped = experiment.merge_records(records)
  for r in dropped:
    print(f"dropped: {r['method']} {r['way']}-way {r['shot']}-shot seed {r['seed']} "
          f"(settings {r.get('settings')} replaced by a later file's)")
  result = {'records': kept, 'accuracy_unit': experiment.ACCURACY_UNIT,
            'merged_from': list(FLAGS.merge)}
  text = report.markdown(result)
  print(text)
  if FLAGS.json:
    atomic_write_json(FLAGS.json, to_jsonable(dict(result, rows=stats.aggregate(kept),
                                                   complete=True)))
  if FLAGS.md:
    atomic_write_text(FLAGS.md, text)


def main(argv):
  del argv
  if FLAGS.merge:
    return _merge()
  config = _config()
  try:  # before any rendering or compiling: one line naming the field
    experiment.settings_of(config)
    experiment.seeds_of(config)
    experiment.check_methods(FLAGS.methods or tuple(config.methods))
  except ValueError as e:
    raise errors.ExpectedError(f'{e} (config or --methods/--ways/--shots/--seeds)') from e
  if FLAGS.memory:
    rows = experiment.meta_gradient_memory(config)
    text = report.memory_markdown(rows)
    print(text)
    json_path, md_path, _ = _paths('memory')
    if json_path:
      atomic_write_json(json_path, to_jsonable({'rows': rows, 'config': config}))
    if md_path:
      atomic_write_text(md_path, text)
    return None
  json_path, md_path, diag_dir = _paths('search' if FLAGS.search else 'fewshot')
  if FLAGS.workdir:  # identical programs across seeds and resumed runs compile once
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', os.path.join(FLAGS.workdir, 'xla_cache'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  log = (progress_lib.log_to(os.path.join(FLAGS.workdir, 'fewshot.log')) if FLAGS.workdir
         else contextlib.nullcontext())
  with log:
    _work(config, json_path, md_path, diag_dir)


def _work(config, json_path, md_path, diag_dir):
  bars = lambda what, units, pending: progress_lib.Progress(
      what, units, pending=pending, every_s=progress_lib.interval(config))
  save = lambda result, complete: atomic_write_json(json_path, to_jsonable(dict(
      result, config=config, quick=_is_quick(), complete=complete,
      rows=stats.aggregate(result.get('records', [])))))  # NaN -> null
  if FLAGS.search:
    done = _earlier(json_path, config, 'points')
    partial = (lambda points: save({'points': points}, False)) if json_path else None
    result = experiment.search(config, FLAGS.methods or None, progress=bars,
                               on_point=partial, done=done)
    text = report.search_markdown(result)
  else:
    make_hook = None
    if int(config.diagnostics_every) > 0:
      from mmtl_jax.fewshot import diagnostics  # pylint: disable=g-import-not-at-top
      make_hook = diagnostics.hook_factory(config, diag_dir or '.')
    done = _earlier(json_path, config, 'records')
    partial = (lambda records: save({'records': records}, False)) if json_path else None
    result = experiment.run(config, FLAGS.methods or None, progress=bars,
                            make_hook=make_hook, on_record=partial, done=done)
    text = report.markdown(result)
  print(text)
  if json_path:
    save(result, True)
  if md_path:
    atomic_write_text(md_path, text)


if __name__ == '__main__':
  errors.run(main)
