r"""Benchmark one MMTL meta-iteration per meta mode x task strategy; prints a table and targets.

  python experiments/benchmark.py --shape=bench --json=/tmp/bench.json
  python experiments/benchmark.py --shape=paper --json=/tmp/paper.json          # accelerators
  python experiments/benchmark.py --modes=exact,first_order --strategies=loop,map
  python experiments/benchmark.py --config.model.dtype=bfloat16 --config.meta.remat=True

Shapes: bench = 8 tasks x 8 segments x 100 frames x 64 bins; paper = 8 x 64 x 300 x 200; both
with the Table 1 model of configs/base.py (any --config.* field can be overridden). Each
combination runs in fresh subprocesses (cold compile, then warm persistent cache); what each
field means: src/mmtl_jax/benchmark.py. Figures and analysis: docs/PERFORMANCE.md.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from mmtl_jax.tools import benchmark
from mmtl_jax import configs

_CONFIG = config_flags.DEFINE_config_file('config', configs.config_path('base'),
                                          'Model and meta settings (mode/strategy are swept).')
_SHAPE = flags.DEFINE_enum('shape', 'bench', sorted(benchmark.SHAPES), 'Problem size.')
_MODES = flags.DEFINE_list('modes', list(benchmark.MODES), 'Meta modes to measure.')
_STRATEGIES = flags.DEFINE_list('strategies', list(benchmark.STRATEGIES),
                                "Task strategies to measure ('auto' allowed).")
_ITERS = flags.DEFINE_integer('iters', 5, 'Timed meta-iterations (median reported; >= 5).')
_TIMEOUT = flags.DEFINE_integer('timeout', 900, 'Seconds allowed per subprocess.')
_JSON = flags.DEFINE_string('json', '', 'Write {"records": [...], "summary": [...]} here.')


def main(argv):
  del argv
  print(benchmark.format_table([]))
  records = benchmark.run(_CONFIG.value, _MODES.value, _STRATEGIES.value, _SHAPE.value,
                          iters=_ITERS.value, timeout_s=_TIMEOUT.value)
  print()
  print(benchmark.format_table(records))
  summary = benchmark.summary(records)
  print('\n'.join(summary))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'records': records, 'summary': summary,
                 'config': json.loads(_CONFIG.value.to_json_best_effort())}, f, indent=1)
    print(f'wrote {_JSON.value}')


if __name__ == '__main__':
  app.run(main)
