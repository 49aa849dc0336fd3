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
Rerun the same command to resume: finished records are kept in <workdir>/records (else
beside --json) and read back, never recomputed or dropped; the table shows every kept record
of the current config (mmtl_jax.fewshot.table).
With --workdir, compiled XLA programs are cached in <workdir>/xla_cache, so later seeds and
resumed runs skip most compilation.
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/fewshot.py')  # one line, not a traceback

from absl import flags

from mmtl_jax.configs import config_path
from mmtl_jax.configs import fewshot as fewshot_config
from mmtl_jax.fewshot import table
from mmtl_jax.run import errors

FLAGS = flags.FLAGS
flags.DEFINE_bool('quick', False, 'the < 10 minute run on 2 cores: 5-way 1-shot, one seed '
                  '(configs/fewshot.py:quick); --config.* overrides still apply')
errors.define_config_file('config', config_path('fewshot'), 'few-shot config file',
                          quick=fewshot_config.quick)  # idempotent
flags.DEFINE_string('json', '', 'write {"records": [...]} here, rewritten after every record '
                    '("complete": false until every record asked for is in); default '
                    '<workdir>/fewshot.json')
flags.DEFINE_string('md', '', 'write the markdown table here (default: <workdir>/fewshot.md '
                    'when --workdir is set)')
flags.DEFINE_list('methods', [], 'methods to run (default: config.methods, all eight: the six '
                  'meta-learners and the two baselines)')
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
flags.DEFINE_string('workdir', '', 'folder for the outputs and the kept records (created)')
flags.DEFINE_integer('diagnostics_every', None, 'every N outer steps, compare first-order, '
                     'Reptile and implicit meta-gradients with the exact one (JSON + PNG)')


def main(argv):
  del argv
  if FLAGS.merge:
    print(table.merge(FLAGS.merge, FLAGS.json, FLAGS.md))
    return
  config = table.apply_flags(FLAGS.config, FLAGS.ways, FLAGS.shots, FLAGS.seed, FLAGS.seeds,
                             FLAGS.diagnostics_every)  # --quick already applied
  if FLAGS.memory:
    table.check(config, FLAGS.methods)
    paths = table.outputs(FLAGS.workdir, FLAGS.json, FLAGS.md, 'memory')
    print(table.memory(config, paths['json'], paths['md']))
    return
  table.run_table(config, workdir=FLAGS.workdir, json_path=FLAGS.json, md_path=FLAGS.md,
                  methods=FLAGS.methods, search=FLAGS.search,
                  quick=FLAGS.quick or FLAGS['config'].config_filename.endswith(':quick'))


if __name__ == '__main__':
  errors.run(main)
