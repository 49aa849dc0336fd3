"""The benchmark harness on a tiny model and shape (figures themselves are not tested)."""

import json
import os
import subprocess
import sys

import pytest

from mmtl_jax.tools import benchmark
from mmtl_jax.tools import paper_shape
from mmtl_jax.configs import base


_SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments', 'benchmark.py')


@pytest.fixture(name='bench_config')
def fixture_bench_config(tiny_model):
  config = base.get_config()
  config.model = tiny_model()
  return config


@pytest.mark.slow  # measured: runs and times the benchmark twice
def test_run_records_every_field_and_the_cache_helps(bench_config, tmp_path):
  records = benchmark.run(bench_config, ['first_order', 'exact'], ['auto'], 'tiny',
                          iters=5, timeout_s=300, cache_root=str(tmp_path),
                          progress=lambda line: None, peak_gflops=100.0)
  assert len(records) == 2
  for r in records:
    assert 'error' not in r, r
    for field in ('mode', 'strategy', 'shape', 'compile_s', 'compile_cached_s', 's_per_iter',
                  'peak_mem_mb', 'gflops_per_s'):
      assert field in r, (field, r)
    assert r['shape'] == 'tiny' and len(r['iters_s']) == 5
    assert r['s_per_iter'] > 0 and r['peak_mem_mb'] > 0 and r['work_gflop'] > 0
    assert r['compile_cached_s'] < r['compile_s'], r  # the persistent cache was hit
    assert r['peak_fraction'] == pytest.approx(r['gflops_per_s'] / 100.0)
  assert records[0]['strategy'] == records[0]['default_strategy']  # 'auto' resolved
  exact, first_order = records[1], records[0]
  assert exact['work_gflop'] > first_order['work_gflop']  # second-order work counted
  text = '\n'.join(benchmark.summary(records, {'matmul_peak_gflops': 100.0}))
  assert 'exact / first_order' in text and 'max cold compile' in text
  assert 'first_order (loop)' in text and 'matmul peak' in text
  assert 'ERROR' not in benchmark.format_table(records)


def test_summary_states_each_target_as_a_measured_ratio():
  def record(mode, strategy, s, gflop):
    return dict(mode=mode, strategy=strategy, s_per_iter=s, work_gflop=gflop,
                gflops_per_s=gflop / s, peak_fraction=gflop / s / 200.0, compile_s=1.0,
                compile_cached_s=0.5, backend='cpu', device='cpu', devices=1,
                default_strategy='loop', shape='bench')
  records = [record('first_order', 'loop', 0.4, 60.0), record('first_order', 'vmap', 0.6, 60.0),
             record('exact', 'loop', 0.8, 130.0), record('exact', 'vmap', 0.9, 130.0)]
  lines = benchmark.summary(records, {'matmul_peak_gflops': 200.0})
  text = '\n'.join(lines)
  assert 'first_order: vmap 0.600 s / loop 0.400 s: 1.50 (target <= 1.25: NOT met)' in text
  assert 'exact: vmap 0.900 s / loop 0.800 s: 1.12 (target <= 1.25: met)' in text
  assert 'matmul peak: 0.75 (target >= 0.75: met)' in text  # 150 GFLOP/s of 200
  assert 'exact / first_order (loop), time (FLOPs 2.17): 2.00 (target <= 2.2: met)' in text


@pytest.mark.slow  # subprocess
def test_matmul_peak_is_measured_in_a_subprocess():
  peak = benchmark.matmul_peak_gflops()
  assert 'error' not in peak, peak
  assert peak['matmul_peak_gflops'] == max(peak['matmul_gflops_by_size'].values()) > 0
  assert set(peak['matmul_gflops_by_size']) == {str(n) for n in benchmark.PEAK_SIZES}


def test_failures_become_error_records(bench_config, tmp_path):
  job = benchmark.Job(bench_config.to_json_best_effort(), 'first_order', 'loop', 'nope', 5,
                      str(tmp_path), 'cold')
  record = benchmark.run_isolated(job, timeout_s=120)
  assert 'error' in record and 'nope' in record['error']


@pytest.mark.parametrize('kwargs, match', [
    (dict(shape='huge'), 'shape'), (dict(iters=3), 'iters'), (dict(modes=['second']), 'mode'),
    (dict(strategies=['pmap']), 'strategy')])
def test_bad_arguments_are_rejected(bench_config, kwargs, match):
  args = dict(modes=['first_order'], strategies=['loop'], shape='tiny', iters=5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    benchmark.run(bench_config, **args)


@pytest.mark.slow  # subprocess: the CLI
def test_cli_writes_json(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, _SCRIPT, '--shape=tiny', '--modes=reptile', '--strategies=loop',
       f'--json={out}', '--config.model.conv_features=(2,3)',
       '--config.model.conv_kernels=((3,3),(2,3))', '--config.model.lstm_hidden=4',
       '--config.model.fc_hidden=5'],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  data = json.loads(out.read_text())
  assert [r['mode'] for r in data['records']] == ['reptile']
  assert list(data)[0] == 'matmul_peak_gflops' and data['matmul_peak_gflops'] > 0
  assert data['records'][0]['peak_fraction'] == (
      data['records'][0]['gflops_per_s'] / data['matmul_peak_gflops'])
  assert 'max cold compile' in proc.stdout


def test_roofline_is_the_slower_of_compute_and_traffic():
  assert paper_shape.roofline_s(2e12, 1e9, tflops=1.0, tb_per_s=1.0) == 2.0  # compute-bound
  assert paper_shape.roofline_s(1e9, 3e12, tflops=1.0, tb_per_s=1.0) == 3.0  # memory-bound
  with pytest.raises(ValueError, match='positive'):
    paper_shape.roofline_s(1.0, 1.0, tflops=0.0, tb_per_s=1.0)


@pytest.mark.slow  # measured: compiles the paper-shape step
def test_paper_shape_analysis_counts_the_compiled_step(bench_config):
  """XLA's counts of an unrun step: exact does more work than first_order; the estimate uses
  the counts it is given (e.g. 'loop''s for 'map', whose task loop XLA counts once)."""
  shape = benchmark.SHAPES['tiny']
  first = paper_shape.analyse(bench_config, 'first_order', 'loop', shape)
  exact = paper_shape.analyse(bench_config, 'exact', 'loop', shape, remat=True)
  for r in (first, exact):
    assert r['work_gflop'] > 0 and r['bytes_gb'] > 0 and r['peak_mem_gb'] > 0, r
    assert r['shape'] == list(shape) and r['strategy'] == 'loop'
  assert exact['work_gflop'] > first['work_gflop'] and exact['remat']
  est = paper_shape.estimate(first, counts=dict(work_gflop=1000.0, bytes_gb=2.0))
  h100 = paper_shape.H100
  assert est['fp32_s'] == paper_shape.roofline_s(1e12, 2e9, h100['fp32_tflops'],
                                                 h100['hbm_tb_per_s'])
  assert est['bf16_s'] == paper_shape.roofline_s(1e12, 1e9, h100['bf16_tflops'],
                                                 h100['hbm_tb_per_s'])
  assert est['fp32_s'] > est['tf32_s'] > est['bf16_s']
  assert 'GFLOP' in paper_shape.format_analysis(dict(first, estimate=est))


@pytest.mark.slow  # measured: compiles and times every convolution
def test_conv_rates_time_every_convolution_of_one_task(bench_config):
  rows = benchmark.conv_rates(bench_config, 'tiny', calls=2)
  # tiny_model: 2 blocks; the first has no input gradient (the spectrogram needs none).
  assert [(r['block'], r['op']) for r in rows] == [
      (0, 'forward'), (0, 'filter_grad'), (1, 'forward'), (1, 'input_grad'), (1, 'filter_grad')]
  _, n, h, w = benchmark.SHAPES['tiny']
  assert rows[2]['gflop'] == 2 * n * (h // 2) * (w // 2) * 2 * 3 * 2 * 3 / 1e9  # 2->3, (2, 3)
  assert all(r['cpu_ms'] > 0 and r['gflops_per_cpu_s'] > 0 for r in rows)
