r"""Exact vs first-order meta-gradient vs Reptile direction, per layer, with an FD check.

  python experiments/compare_gradients.py --json=/tmp/grads.json --plot=/tmp/grads.png
  python experiments/train.py --workdir=runs/demo      # then, on its MMTL checkpoints:
  python experiments/compare_gradients.py --checkpoints=runs/demo/mmtl/Ses01-testSes01M/checkpoints/150,runs/demo/mmtl/Ses01-testSes01M

--checkpoints takes what training writes: a step `<workdir>/mmtl/<fold>/checkpoints/<step>`
(its current params), a fold directory or its checkpoints/ (the latest step), relative or
absolute; also an orbax PyTree checkpoint of {'theta', 'phi'} with the config's model shapes.
A training checkpoint brings its run's config (<workdir>/config.json, else the fold's bundle
or results.json): the run's model (in float64), segment shape, number of auxiliary tasks and
inner rates replace the config's, so that the params fit. The first table is at a fresh
initialisation of that model, then one per checkpoint (also in --json).
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/compare_gradients.py')  # one line, not a traceback

import json

from absl import flags

from mmtl_jax.tools import compare_gradients as gradient_comparison
from mmtl_jax.configs import config_path
from mmtl_jax.run import errors

FLAGS = flags.FLAGS
errors.define_config_file('config', config_path('compare_gradients'), 'config file')
flags.DEFINE_string('json', '', 'write the results here')
flags.DEFINE_string('plot', '', 'write a per-layer bar chart (PNG) here')
flags.DEFINE_list('checkpoints', [], 'training checkpoints to compare too: '
                  '<workdir>/mmtl/<fold>/checkpoints/<step>, a fold directory (latest step), '
                  'or an orbax checkpoint of {theta, phi}; comma-separated')


def main(argv):
  del argv
  config, checkpoints, located = gradient_comparison.restore_all(FLAGS.config,
                                                                FLAGS.checkpoints)
  result = gradient_comparison.compare(config, checkpoints=checkpoints)
  for path, entry in zip(located, result['checkpoints']):
    entry['path'] = path
  fd = result['finite_difference']
  print(f"exact meta-gradient vs central FD (eps {fd['eps']:g}): relative error "
        f"{fd['relative_error']:.2e}")
  print(f"global cosine to exact: first-order {result['global']['first_order']['cosine']:.6f}, "
        f"Reptile {result['global']['reptile']['cosine']:.4f}")
  print(f"{'layer':<36} {'FO cos':>9} {'FO |.|/|ex|':>11} {'FO rel err':>10} {'Rep cos':>8}")
  for l in result['layers']:
    print(f"{l['name']:<36} {l['cosine']:>9.6f} {l['norm_ratio']:>11.4f} "
          f"{l['relative_error']:>10.2e} {l['reptile_cosine']:>8.4f}")
  for entry in result['checkpoints']:
    print(f"{entry['path']}: global cosine to exact: first-order "
          f"{entry['global']['first_order']['cosine']:.6f}, Reptile "
          f"{entry['global']['reptile']['cosine']:.4f}; exact vs FD relative error "
          f"{entry['finite_difference']['relative_error']:.2e}")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(result, f, indent=1)
  if FLAGS.plot:
    gradient_comparison.plot(result, FLAGS.plot)


if __name__ == '__main__':
  errors.run(main)
