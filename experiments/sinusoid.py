r"""Few-shot sinusoid regression with the SAME meta-update as MMTL (exact / FOMAML / Reptile).

Prints the MSE after one adaptation step on K=10 points, over 1,000 held-out tasks, for each
meta mode and for a pretrained (joint regression) baseline.

  python experiments/sinusoid.py --json=/tmp/sinusoid.json
  python experiments/sinusoid.py --config.train.steps=1000   # quicker
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/sinusoid.py')  # one line, not a traceback

import json

from absl import flags

from mmtl_jax.examples import sinusoid
from mmtl_jax.configs import config_path
from mmtl_jax.run import errors

FLAGS = flags.FLAGS
errors.define_config_file('config', config_path('sinusoid'), 'sinusoid config file')
flags.DEFINE_string('json', '', 'also write the results here')


def format_table(results: dict) -> str:
  lines = [f"{'model':<12} {'MSE 0 steps':>12} {'MSE 1 step':>12} {'+-95%':>8} {'train s':>8}"]
  for name, r in results.items():
    lines.append(f"{name:<12} {r['mse_before']:>12.3f} {r['mse_after']:>12.3f} "
                 f"{r['mse_after_ci95']:>8.3f} {r.get('train_s', 0.0):>8.1f}")
  return '\n'.join(lines)


def main(argv):
  del argv
  config = FLAGS.config
  results = sinusoid.run(config)
  print(f'{config.train.steps} meta-iterations x {config.train.meta_batch} tasks, '
        f'K={config.task.k_support}, {config.eval.tasks} held-out tasks '
        f'(MSE on {config.eval.query_points} points each)')
  print(format_table(results))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'config': config.to_dict(), 'results': results}, f, indent=1)


if __name__ == '__main__':
  errors.run(main)
