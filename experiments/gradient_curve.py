r"""The gradient-diagnostic curve: first-order / Reptile vs exact meta-gradients over MMTL
meta-training (first fold), per parameter group. See mmtl_jax/tools/gradient_curve.py.

  python experiments/gradient_curve.py --workdir=runs/curve --json=curve.json --plot=curve.png
  python experiments/gradient_curve.py --every=5 --config.meta.alpha=0.1
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/gradient_curve.py')  # one line, not a traceback

import json

from absl import flags

from mmtl_jax import configs
from mmtl_jax.tools import gradient_curve
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file('config', configs.config_path('demo'),
                                          'Experiment config file (get_config()).')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/gradient_curve',
                               'features (and the synthetic corpus) go here')
_EVERY = flags.DEFINE_integer('every', 10, 'diagnostics every this many meta-training steps')
_STEPS = flags.DEFINE_integer('steps', None, 'meta-training steps (default config.train.steps)')
_MODES = flags.DEFINE_list('modes', list(gradient_curve.MODES), 'modes compared with exact')
_JSON = flags.DEFINE_string('json', '', 'write {"records": [...], "settings": {...}} here')
_PLOT = flags.DEFINE_string('plot', '', 'write the curves (PNG) here')


def main(argv):
  del argv
  result = gradient_curve.curve(_CONFIG.value, _WORKDIR.value, every=_EVERY.value,
                                modes=_MODES.value, steps=_STEPS.value)
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1)
  if _PLOT.value:
    gradient_curve.plot(result, _PLOT.value)
  print(json.dumps(result['settings']))
  print(gradient_curve.format_table(result))


if __name__ == '__main__':
  errors.run(main)
