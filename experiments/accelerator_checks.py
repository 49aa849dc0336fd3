r"""The accelerator checks of issue 12, in one command that fits in 10 minutes on one GPU.

  python experiments/accelerator_checks.py --json=$OUT/accel.json          # on the GPU
  python experiments/accelerator_checks.py --shape=tiny --budget_s=300 \
      --config.model.conv_features='(2,3)' --config.model.conv_kernels='((3,3),(2,3))'  # smoke

In priority order, each step written to --json as soon as it is done; a subprocess is cut at
the --budget_s deadline, and steps with under 30 s left are skipped (listed under 'skipped').
The last two steps compile in this process and are not cut: budget 480 s leaves them room.
  1. float32 matmul peak with jax (what GFLOP/s are compared with);
  2. first_order and exact at --shape (default paper: 8 x 64 x 300 x 200) with strategies
     vmap, loop and sharded (all devices): s/iter, cold compile, peak device memory, GFLOP/s
     (benchmark.py's fresh subprocesses, without the cached-compile phase);
  3. the same two modes in bf16 compute (float32 params) with the default strategy;
  4. XLA's memory_analysis() peak and FLOPs/bytes of the exact step, remat off and on, and
     the H100 roofline estimate next to the measured time (tools/paper_shape.py).
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/accelerator_checks.py')  # one line, not a traceback

import json
import time

from absl import flags

from mmtl_jax import configs
from mmtl_jax.tools import benchmark
from mmtl_jax.tools import paper_shape
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file('config', configs.config_path('base'),
                                          'Model and meta settings.')
_SHAPE = flags.DEFINE_enum('shape', 'paper', sorted(benchmark.SHAPES), 'Problem size.')
_JSON = flags.DEFINE_string('json', '', 'Write the results here (after every step).')
_BUDGET = flags.DEFINE_integer('budget_s', 480, 'Seconds for all steps (a step needs 30 '
                                'left to start; subprocesses are cut at the budget).')
_ITERS = flags.DEFINE_integer('iters', 5, 'Timed meta-iterations per combination (>= 5).')

MODES = ('first_order', 'exact')
STRATEGIES = ('vmap', 'loop', 'sharded')


def _steps(config):
  """(name, thunk(timeout_s)) per check, in priority order."""
  shape = _SHAPE.value
  bf16 = config.copy_and_resolve_references()
  bf16.model.dtype = 'bfloat16'

  def timed(cfg, mode, strategy):
    return lambda timeout_s: benchmark.run(cfg, [mode], [strategy], shape, iters=_ITERS.value,
                                           timeout_s=timeout_s, cached=False, progress=print)[0]

  steps = [('matmul_peak', lambda timeout_s: benchmark.matmul_peak_gflops(timeout_s))]
  for mode in MODES:
    for strategy in STRATEGIES:
      steps.append((f'{mode}/{strategy}', timed(config, mode, strategy)))
  for mode in MODES:
    steps.append((f'bf16 {mode}/auto', timed(bf16, mode, 'auto')))
  for remat in (False, True):  # in this process: no timeout, so last
    steps.append((f'analysis exact/auto remat={remat}', lambda _, r=remat: paper_shape.analyse(
        config, 'exact', 'auto', benchmark.SHAPES[shape], r)))
  return steps


def _finish(out):
  """Peak fractions, roofline estimates next to the measured times, and the summary."""
  peak = out['results'].get('matmul_peak', {}).get('matmul_peak_gflops')
  timed = [r for name, r in out['results'].items() if '/' in name and 'analysis' not in name]
  benchmark.add_peak_fraction(timed, peak)
  for name, r in out['results'].items():
    if name.startswith('analysis') and 'error' not in r:
      r['estimate'] = paper_shape.estimate(r)
      measured = out['results'].get(f'{r["mode"]}/{r["strategy"]}', {})
      r['measured_s_per_iter'] = measured.get('s_per_iter')
  plain = [r for name, r in out['results'].items()
           if '/' in name and not name.startswith(('bf16', 'analysis'))]
  out['summary'] = benchmark.summary(plain, out['results'].get('matmul_peak'))


def main(argv):
  del argv
  start = time.perf_counter()
  out = {'shape': _SHAPE.value, 'budget_s': _BUDGET.value, 'results': {}, 'skipped': []}
  for name, thunk in _steps(_CONFIG.value):
    left = _BUDGET.value - (time.perf_counter() - start)
    if left < 30:
      out['skipped'].append(name)
      continue
    t = time.perf_counter()
    try:
      out['results'][name] = thunk(min(240.0, left))  # a subprocess never outlives the budget
    except Exception as e:  # pylint: disable=broad-except  (report it, go on with the rest)
      out['results'][name] = {'error': f'{type(e).__name__}: {e}'}
    print(f'{name}: {time.perf_counter() - t:.0f} s', flush=True)
    _finish(out)
    if _JSON.value:
      with open(_JSON.value, 'w') as f:
        json.dump(out, f, indent=1)
  print('\n'.join(out.get('summary', [])))
  for name, r in out['results'].items():
    if name.startswith('analysis') and 'error' not in r:
      print(paper_shape.format_analysis(r))
  print(f'skipped (budget): {out["skipped"]}; total {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  errors.run(main)
