"""Strategy 'sharded' of the meta library: placement on a mesh, and every estimator sharded over
a task count the (fake CPU) devices do not divide. (Whole MMTL steps over 8 devices and two
processes: tests/ser/test_mmtl_sharded.py.)
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from mmtl_jax import meta


def test_placement_on_a_one_device_mesh_keeps_values():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('tasks',))
  batch = {'x': np.arange(12, dtype=np.float32).reshape(3, 4), 'y': np.arange(3)}
  placed = meta.shard_task_batch(batch, mesh)
  np.testing.assert_array_equal(placed['x'], batch['x'])
  np.testing.assert_array_equal(placed['y'], batch['y'])
  assert placed['x'].sharding.spec == jax.sharding.PartitionSpec('tasks')
  tree = {'w': np.ones((2, 3), np.float32), 'count': np.int32(4)}
  replicated = meta.replicate(tree, mesh)
  assert replicated['w'].sharding.spec == jax.sharding.PartitionSpec()
  assert int(replicated['count']) == 4
  assert meta.replicate(replicated, mesh)['w'] is replicated['w']  # already placed: no copy
  with pytest.raises(ValueError, match='share one leading task axis'):
    meta.shard_task_batch({'x': np.zeros((3, 2)), 'y': np.zeros((4,))}, mesh)
  with pytest.raises(ValueError, match='1-D mesh'):
    meta.shard_task_batch(batch, jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                                                   ('a', 'b')))


# 5 tasks on 3 fake CPU devices (padded to 6): every built-in estimator, a custom one and
# `sum_over_tasks`, sharded against vmap; the real task count travels as an argument (the
# library has no thread-local).
_PADDED_SCRIPT = textwrap.dedent('''
    import dataclasses, json
    import jax, jax.numpy as jnp, numpy as np
    from mmtl_jax import meta
    assert jax.device_count() == 3
    jax.config.update('jax_enable_x64', True)

    @dataclasses.dataclass(frozen=True)
    class Halved(meta.Estimator):
      def direction(self, params, task):
        grads, loss, adapted, stats = meta.Exact().direction(params, task)
        return jax.tree.map(lambda g: g / 2, grads), loss, adapted, stats

    loss = lambda p, b, r: jnp.mean((jnp.tanh(b['x'] @ p['net']['w']) - b['y']) ** 2)
    rng = np.random.default_rng(0)
    params = {'net': {'w': jnp.asarray(rng.normal(size=(3,)))}}
    batch = {'x': jnp.asarray(rng.normal(size=(5, 4, 3))), 'y': jnp.asarray(rng.normal(size=(5, 4)))}
    mesh = meta.default_mesh()
    out = {}
    estimators = {'exact': meta.Exact(), 'first_order': meta.FirstOrder(),
                  'reptile': meta.Reptile(), 'implicit': meta.Implicit(lam=2.0, cg_steps=3),
                  'halved': Halved()}
    for name, est in estimators.items():
      for reduce in ('mean', 'sum'):
        spec = meta.recipes.maml(loss, loss, groups='net', steps=2, lr=0.1, mode=est,
                                 task_reduce=reduce)
        got = {}
        for strategy in ('vmap', 'sharded'):
          s = dataclasses.replace(spec, strategy=strategy)
          g = jax.jit(lambda p, b: meta.meta_gradient(s, p, b, jax.random.PRNGKey(1), mesh=mesh))(
              meta.replicate(params, mesh), meta.shard_task_batch(batch, mesh))
          got[strategy] = [np.asarray(x).tolist() for x in jax.tree.leaves((g.grads, g.metrics))]
        out[f'{name}/{reduce}'] = got
    fn = lambda b, i: jnp.sum(b['x']) * (i + 1)
    out['sum'] = [float(meta.sum_over_tasks(fn, batch, s, mesh=mesh)) for s in ('vmap', 'sharded')]
    print(json.dumps(out))
''')


@pytest.mark.slow  # a subprocess with 3 fake CPU devices
def test_every_estimator_is_sharded_over_a_task_count_the_devices_do_not_divide():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=3',
             JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-c', _PADDED_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  total = out.pop('sum')
  np.testing.assert_allclose(total[1], total[0], rtol=1e-12)
  for name, got in out.items():
    for a, b in zip(got['sharded'], got['vmap']):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
