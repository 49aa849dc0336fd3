r"""Few-shot classification of procedurally generated glyphs (Omniglot-like) with six
meta-learners of the meta library: maml (exact), fomaml, reptile, imaml, meta_sgd, anil.

The alphabet: 1,000 random stroke characters x 4 rotations = 4,000 classes, 20 jittered
28x28 drawings each, split by character 70/10/20. Model: the 4-block conv net of Finn et al.
(2017) with transductive BatchNorm. One record per method x (way, shot):
{method, way, shot, accuracy, ci95 (percent), s_per_iter, peak_mem_mb (peak RSS, psutil)}.

  python experiments/fewshot.py --json=fs.json --md=fewshot.md           # full run
  python experiments/fewshot.py --quick                                  # < 5 min, 2 cores
  python experiments/fewshot.py --methods=maml,fomaml --ways=20 --shots=1
  python experiments/fewshot.py --config.train.iterations=50 --config.model.channels=8

--quick runs 5-WAY 1-SHOT ONLY (all six methods; 18 records do not fit in 5 minutes on 2
cores), with 100 meta-iterations instead of 500 and 100 test episodes instead of 200 (same
alphabet, model and method settings): the same as
--config=src/mmtl_jax/configs/fewshot.py:quick; --config.* overrides apply on top.
"""

import os

from absl import flags
from ml_collections import config_flags
from tqdm.auto import tqdm

from mmtl_jax.configs import config_path
from mmtl_jax.configs import fewshot as fewshot_config
from mmtl_jax.fewshot import experiment, report
from mmtl_jax.run.files import atomic_write_json, atomic_write_text, to_jsonable
from mmtl_jax.run import errors

FLAGS = flags.FLAGS
errors.define_config_file('config', config_path('fewshot'), 'few-shot config file')
flags.DEFINE_bool('quick', False, 'the < 5 minute run: 5-way 1-shot only (see above)')
flags.DEFINE_string('json', '', 'write {"records": [...]} here, rewritten after every record '
                    '("complete": false until the end); default <workdir>/fewshot.json')
flags.DEFINE_string('md', '', 'write the markdown table here (default: <workdir>/fewshot.md '
                    'when --workdir is set)')
flags.DEFINE_list('methods', [], 'methods to run (default: config.methods, all six)')
flags.DEFINE_list('ways', [], 'ways, paired with --shots (default: config.ways)')
flags.DEFINE_list('shots', [], 'shots, paired with --ways (default: config.shots)')
flags.DEFINE_integer('seed', None, 'training seed (init, episodes); the alphabet keeps '
                     'config.data.seed')
flags.DEFINE_string('workdir', '', 'folder for the outputs (created)')
flags.DEFINE_integer('diagnostics_every', None, 'every N outer steps, compare first-order, '
                     'Reptile and implicit meta-gradients with the exact one (JSON + PNG)')


def _config():
  config = FLAGS.config
  if FLAGS.quick and not FLAGS['config'].config_filename.endswith(':quick'):
    config = fewshot_config.get_config('quick')  # then the --config.* overrides again
    config.update_from_flattened_dict(config_flags.get_override_values(FLAGS['config']))
  if FLAGS.ways or FLAGS.shots:
    try:
      config.ways = tuple(int(w) for w in (FLAGS.ways or config.ways))
      config.shots = tuple(int(s) for s in (FLAGS.shots or config.shots))
    except ValueError as e:
      raise errors.ExpectedError(f'{e}, --ways or --shots, give integers, e.g. --ways=5,20 '
                                 '--shots=1,5') from e
  if FLAGS.seed is not None:
    config.seed = FLAGS.seed
  if FLAGS.diagnostics_every is not None:
    config.diagnostics_every = FLAGS.diagnostics_every
  return config


def _is_quick():
  return FLAGS.quick or FLAGS['config'].config_filename.endswith(':quick')


def _paths():
  if FLAGS.workdir:
    os.makedirs(FLAGS.workdir, exist_ok=True)
  at = lambda name: os.path.join(FLAGS.workdir, name) if FLAGS.workdir else ''
  return FLAGS.json or at('fewshot.json'), FLAGS.md or at('fewshot.md'), at('diagnostics')


def main(argv):
  del argv
  config = _config()
  json_path, md_path, diag_dir = _paths()
  make_hook = None
  if int(config.diagnostics_every) > 0:
    from mmtl_jax.fewshot import diagnostics  # pylint: disable=g-import-not-at-top
    make_hook = diagnostics.hook_factory(config, diag_dir or '.')
  save = lambda result, complete: atomic_write_json(json_path, to_jsonable(dict(
      result, config=config, quick=_is_quick(), complete=complete)))  # NaN -> null
  partial = (lambda records: save({'records': records}, False)) if json_path else None
  result = experiment.run(config, FLAGS.methods or None,
                          progress_factory=lambda **kw: tqdm(leave=False, **kw),
                          make_hook=make_hook, on_record=partial)
  print(report.markdown(result))
  if json_path:
    save(result, True)
  if md_path:
    atomic_write_text(md_path, report.markdown(result))


if __name__ == '__main__':
  errors.run(main)
