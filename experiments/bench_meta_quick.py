r"""Quick timing of one MMTL meta-iteration per mode x task strategy (superseded later).

Bench shape of DESIGN.md: 8 speaker tasks x 8 segments x 100 frames x 64 bins, the Table 1
model, 3 auxiliary tasks. Each combination runs in its own subprocess with a wall-clock limit
(default 180 s for compile + runs); one that exceeds it is reported as a timeout.

  python experiments/bench_meta_quick.py --json=/tmp/bench.json
  python experiments/bench_meta_quick.py --modes=exact --strategies=map --iters=5
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list('modes', ['first_order', 'reptile', 'exact'], 'meta modes')
flags.DEFINE_list('strategies', ['loop', 'vmap', 'map'], 'task strategies')
flags.DEFINE_integer('iters', 5, 'timed iterations after one warm-up')
flags.DEFINE_integer('tasks', 8, 'speaker tasks')
flags.DEFINE_integer('segments', 8, 'segments per task')
flags.DEFINE_integer('frames', 100, 'frames per segment')
flags.DEFINE_integer('bins', 64, 'frequency bins')
flags.DEFINE_integer('aux', 3, 'auxiliary tasks')
flags.DEFINE_integer('timeout', 180, 'seconds allowed per combination (compile + runs)')
flags.DEFINE_string('json', '', 'write results here')
flags.DEFINE_string('_one', '', 'internal: run one "mode,strategy" and print a JSON line')


def run_one(mode: str, strategy: str) -> dict:
  """Compiles and times one combination in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mmtl_jax import ser  # pylint: disable=g-import-not-at-top
  from mmtl_jax.configs import base  # pylint: disable=g-import-not-at-top

  config = base.get_config()
  config.meta.mode = mode
  config.meta.strategy = strategy
  n, b, t, f, k, c = FLAGS.tasks, FLAGS.segments, FLAGS.frames, FLAGS.bins, FLAGS.aux, 4
  rng = np.random.default_rng(0)
  batch = {
      'x': rng.normal(size=(n, b, t, f)).astype(np.float32),
      'target': rng.integers(0, c, (n, b)).astype(np.int32),
      'aux': rng.integers(0, c, (n, b, k)).astype(np.int32),
      'target_weight': rng.uniform(0.2, 1.0, (n, c)).astype(np.float32),
      'aux_weight': rng.uniform(0.2, 1.0, (n, k, c)).astype(np.float32),
  }
  init_fn, step_fn = ser.make_mmtl_step(config)
  params = ser.init_params(config.model, jax.random.PRNGKey(0), (1, t, f))
  opt_state = init_fn(params)
  batch = jax.device_put(batch)
  key = jax.random.PRNGKey(1)
  start = time.perf_counter()
  compiled = jax.jit(step_fn, donate_argnums=(0, 1)).lower(params, opt_state, batch, key).compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(FLAGS.iters + 1):
    start = time.perf_counter()
    params, opt_state, metrics = compiled(params, opt_state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready((params, metrics))
    times.append(time.perf_counter() - start)
  return {'mode': mode, 'strategy': strategy, 'compile_s': compile_s,
          'warmup_s': times[0], 's_per_iter': statistics.median(times[1:]),
          'iters': times[1:], 'outer_loss': float(metrics['outer_loss']),
          'backend': jax.default_backend(), 'loadavg_end': os.getloadavg()[0]}


def main(argv):
  del argv
  if FLAGS._one:  # pylint: disable=protected-access
    print('RESULT ' + json.dumps(run_one(*FLAGS._one.split(','))))  # pylint: disable=protected-access
    return
  results = []
  for mode in FLAGS.modes:
    for strategy in FLAGS.strategies:
      cmd = [sys.executable, __file__, f'--_one={mode},{strategy}'] + [
          f'--{name}={getattr(FLAGS, name)}'
          for name in ('iters', 'tasks', 'segments', 'frames', 'bins', 'aux')]
      load = os.getloadavg()[0]
      start = time.perf_counter()
      try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAGS.timeout)
        lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
        if not lines:
          result = {'mode': mode, 'strategy': strategy, 'error': out.stderr[-2000:]}
        else:
          result = json.loads(lines[-1][len('RESULT '):])
      except subprocess.TimeoutExpired:
        result = {'mode': mode, 'strategy': strategy,
                  'timeout': f'> {FLAGS.timeout} s for compile + {FLAGS.iters + 1} iterations'}
      result['wall_s'] = time.perf_counter() - start
      result['loadavg_start'] = load
      results.append(result)
      print(json.dumps(result), flush=True)
  print(f"\n{'mode':<12} {'strategy':<8} {'compile s':>10} {'s/iter':>8}")
  for r in results:
    if 'compile_s' in r:
      print(f"{r['mode']:<12} {r['strategy']:<8} {r['compile_s']:>10.1f} {r['s_per_iter']:>8.2f}")
    else:
      print(f"{r['mode']:<12} {r['strategy']:<8} {r.get('timeout', 'error'):>20}")
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
