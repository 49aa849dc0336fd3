"""Strategy 'sharded' over several (fake CPU) devices and processes: whole MMTL steps, float64.

Subprocesses, run concurrently, each take 3 jitted `ser.make_mmtl_step` steps on a tiny SER
model (one conv block, its BiLSTM, dropout on) from the same params and batches of 8 tasks:
  devices8:  XLA_FLAGS forces 8 CPU devices (set before JAX starts); strategy 'sharded' on
             the 8-device mesh (params and optimiser state placed by `meta.replicate`, every
             batch by `meta.shard_task_batch`), then 'vmap' on its default device alone (that
             vmap equals 'loop' is tests/meta/test_meta_strategies.py's job);
  hosts2:    two processes joined by jax.distributed (2 CPU devices each: a 4-device mesh
             spanning both, 2 tasks per device), 'sharded', mode first_order.
The final params must agree up to float reassociation. devices8 also takes one exact step on
6 tasks (padded to 8 with zero-weight tasks) and compares it with vmap.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from mmtl_jax import meta

# The runs are in float64 (x64, float64 model and batches): the strategies differ by float
# reassociation only, about 1e-16 relative per operation; float32 at 1e-5 failed on one AMD EPYC
# machine (2.09e-5 sharded vs vmap).
TOLERANCE = 1e-10  # max relative difference of the final params

# argv: strategies (comma-separated), modes (comma-separated), [process_id, port].
_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    jax.config.update('jax_enable_x64', True)
    if len(sys.argv) > 3:
      jax.distributed.initialize(f'localhost:{sys.argv[4]}', num_processes=2,
                                 process_id=int(sys.argv[3]), initialization_timeout=120)
      assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    import os
    import ml_collections, numpy as np
    from jax.sharding import PartitionSpec as P
    from mmtl_jax import meta
    from mmtl_jax.configs import base
    from mmtl_jax.ser import losses as ser

    STRATEGIES, MODES = sys.argv[1].split(','), sys.argv[2].split(',')
    TASKS, SEGMENTS, FRAMES, BINS, STEPS = 8, 2, 16, 16, 3
    mesh = meta.default_mesh()
    out = {'mesh': dict(mesh.shape)}
    model = ml_collections.ConfigDict(json.loads(os.environ['MMTL_TEST_MODEL']))

    def init_params():
      params = ser.init_params(model, jax.random.PRNGKey(0), (1, FRAMES, BINS))
      return jax.tree.map(lambda x: np.asarray(x, np.float64), params)

    def random_batch(*args, **kwargs):
      batch = ser.random_batch(*args, **kwargs)
      return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in batch.items()}

    def config(mode, strategy):
      c = ml_collections.ConfigDict()
      c.model = model
      c.meta = base.get_config().meta
      c.meta.update(dict(mode=mode, strategy=strategy, alpha=0.3, beta=0.2, gamma=1e-2))
      return c

    def train(mode, strategy):
      init_fn, step_fn = ser.make_mmtl_step(config(mode, strategy))
      params = init_params()
      opt_state = init_fn(params)
      assert isinstance(opt_state, meta.MetaState)
      place_state, place_batch = (lambda t: t), (lambda b: b)
      if strategy == 'sharded':
        place_state = lambda t: meta.replicate(t, mesh)
        place_batch = lambda b: meta.shard_task_batch(b, mesh)
      params, opt_state = place_state(params), place_state(opt_state)
      step = jax.jit(step_fn, donate_argnums=(0, 1))
      for i in range(STEPS):
        batch = place_batch(random_batch(TASKS, SEGMENTS, FRAMES, BINS, seed=i))
        if strategy == 'sharded':
          per_device = TASKS // mesh.devices.size
          assert batch['x'].sharding.spec == P('tasks'), batch['x'].sharding
          assert [s.data.shape[0] for s in batch['x'].addressable_shards] == (
              [per_device] * jax.local_device_count())
        params, opt_state, metrics = step(params, opt_state, batch,
                                          jax.random.fold_in(jax.random.PRNGKey(1), i))
      if strategy == 'sharded':
        specs = {leaf.sharding.spec for leaf in jax.tree.leaves(params)}
        assert specs == {P()}, specs
      else:
        assert {len(leaf.devices()) for leaf in jax.tree.leaves(params)} == {1}
      assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
      return [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(params)]

    for mode in MODES:
      out[mode] = {s: train(mode, s) for s in STRATEGIES}
    out['init'] = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(init_params())]

    if 'sharded' in STRATEGIES and jax.process_count() == 1:
      # 6 tasks on 8 devices: padded with zero-weight tasks; one step through make_mmtl_step.
      odd = random_batch(6, SEGMENTS, FRAMES, BINS)
      placed = meta.shard_task_batch(odd, mesh)
      out['odd_replicated'] = placed['x'].sharding.is_fully_replicated
      params = init_params()
      padded = {}
      for strategy in ('sharded', 'vmap'):
        init_fn, step_fn = ser.make_mmtl_step(config('exact', strategy))
        b = placed if strategy == 'sharded' else odd
        p, _, m = jax.jit(step_fn)(params, init_fn(params), b, jax.random.PRNGKey(1))
        padded[strategy] = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves((p, m))]
      out['padded'] = padded
      # meta_gradient called alone (not through make_step) on params placed on the mesh.
      batch = random_batch(TASKS, SEGMENTS, FRAMES, BINS, seed=5)
      grads = {}
      for strategy in ('sharded', 'vmap'):
        p, b = params, batch
        if strategy == 'sharded':
          p, b = meta.replicate(params, mesh), meta.shard_task_batch(batch, mesh)
        spec = ser.mmtl_spec(config('first_order', strategy))
        g = jax.jit(lambda p, b: meta.meta_gradient(spec, p, b, jax.random.PRNGKey(3)).grads)(
            p, b)
        grads[strategy] = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(g)]
      out['direct'] = grads
    print('RESULT ' + json.dumps(out))
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _rel_diff(a, b):
  """max over the leaves (lists of the same params' leaves) of max|a - b| / max|b|."""
  assert len(a) == len(b)
  return max(float(np.max(np.abs(np.subtract(x, y))) / (np.max(np.abs(y)) + 1e-12))
             for x, y in zip(a, b))


@pytest.fixture(scope='module')
def runs(tiny_model):
  """{job name: the RESULT dict its (first) process printed}."""
  model = tiny_model('float64', dropout=0.2)  # dropout: per-task keys must match
  model.conv_features, model.conv_kernels = (2,), ((3, 3),)  # one conv block: compiles faster
  base = dict(os.environ, JAX_PLATFORMS='cpu', MMTL_TEST_MODEL=json.dumps(model.to_dict()))
  base.pop('XLA_FLAGS', None)
  two = dict(base, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  port = str(_free_port())
  jobs = {'devices8': (dict(base, XLA_FLAGS='--xla_force_host_platform_device_count=8'),
                       ['sharded,vmap', 'first_order,exact']),
          'hosts2': (two, ['sharded', 'first_order', '0', port]),
          'hosts2_process1': (two, ['sharded', 'first_order', '1', port])}
  procs = {name: subprocess.Popen([sys.executable, '-c', _SCRIPT] + args, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for name, (env, args) in jobs.items()}
  results = {}
  try:
    for name, proc in procs.items():
      stdout, stderr = proc.communicate(timeout=600)
      lines = [line for line in stdout.splitlines() if line.startswith('RESULT ')]
      assert lines, f'{name}: {stderr[-4000:]}'
      results[name] = json.loads(lines[0][len('RESULT '):])
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
  return results


@pytest.mark.slow  # subprocesses, 8 fake CPU devices
@pytest.mark.parametrize('mode', ['first_order', 'exact'])
def test_sharded_steps_match_vmap_on_one_device(runs, mode):
  assert runs['devices8']['mesh'] == {'tasks': 8}
  final = runs['devices8'][mode]
  diffs = {'sharded_vs_vmap': _rel_diff(final['sharded'], final['vmap'])}
  moved = max(float(np.max(np.abs(np.subtract(x, y))))
              for x, y in zip(final['vmap'], runs['devices8']['init']))
  assert moved > 1e-3, moved  # the 3 steps did change the params
  print(f'{mode}: max relative differences of the final params {diffs}')
  assert all(v < TOLERANCE for v in diffs.values()), (
      f'{mode}: max relative differences of the final params {diffs} (tolerance {TOLERANCE})')


@pytest.mark.slow  # subprocesses, 2 processes x 2 fake CPU devices
def test_sharded_over_two_processes_matches_one_device(runs):
  assert runs['hosts2']['mesh'] == {'tasks': 4}
  sharded = runs['hosts2']['first_order']['sharded']
  assert _rel_diff(runs['hosts2_process1']['first_order']['sharded'], sharded) == 0.0
  diffs = {'hosts2_vs_vmap': _rel_diff(sharded, runs['devices8']['first_order']['vmap'])}
  print(f'first_order, 2 processes: max relative differences of the final params {diffs}')
  assert all(v < TOLERANCE for v in diffs.values()), (
      f'2 processes: max relative differences of the final params {diffs} '
      f'(tolerance {TOLERANCE})')


@pytest.mark.slow  # subprocesses, 8 fake CPU devices
def test_meta_gradient_alone_accepts_params_placed_on_the_mesh(runs):
  direct = runs['devices8']['direct']
  diff = _rel_diff(direct['sharded'], direct['vmap'])
  assert diff < TOLERANCE, f'sharded vs vmap meta-gradient: {diff}'


@pytest.mark.slow  # subprocesses, 8 fake CPU devices
def test_tasks_not_a_multiple_of_the_devices_are_padded(runs):
  """6 tasks on 8 devices: the 2 padding tasks (copies of task 0) must weigh nothing, and the
  mean must be over the 6 real tasks (a mean over 8, or task 0 counted 3 times, fails)."""
  assert runs['devices8']['odd_replicated']  # replicated, then padded inside the jit
  padded = runs['devices8']['padded']
  diff = _rel_diff(padded['sharded'], padded['vmap'])
  assert diff < TOLERANCE, f'padded sharded vs vmap, params and metrics after one step: {diff}'
