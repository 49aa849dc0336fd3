r"""Exact vs first-order meta-gradient vs Reptile direction, per layer, with an FD check.

  python experiments/compare_gradients.py --json=/tmp/grads.json --plot=/tmp/grads.png
  python experiments/compare_gradients.py --checkpoints=runs/a/ckpt/100,runs/a/ckpt/200

Checkpoints are orbax PyTree checkpoints of {'theta', 'phi'} with the config's model shapes.
"""

import json

from absl import flags

from mmtl_jax.tools import compare_gradients as gradient_comparison
from mmtl_jax.configs import config_path
from mmtl_jax.run import errors

FLAGS = flags.FLAGS
errors.define_config_file('config', config_path('compare_gradients'), 'config file')
flags.DEFINE_string('json', '', 'write the results here')
flags.DEFINE_string('plot', '', 'write a per-layer bar chart (PNG) here')
flags.DEFINE_list('checkpoints', [], 'orbax checkpoint dirs of {theta, phi} to compare too')


def main(argv):
  del argv
  checkpoints = [gradient_comparison.restore(p) for p in FLAGS.checkpoints]
  result = gradient_comparison.compare(FLAGS.config, checkpoints=checkpoints)
  for path, entry in zip(FLAGS.checkpoints, result['checkpoints']):
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
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(result, f, indent=1)
  if FLAGS.plot:
    gradient_comparison.plot(result, FLAGS.plot)


if __name__ == '__main__':
  errors.run(main)
