"""The paper shape without an accelerator: XLA's own counts of the compiled meta-step.

For each (mode, strategy, remat), `analyse` lowers and compiles one MMTL meta-iteration on
abstract inputs (nothing is allocated or run) and reads from the compiled executable:
  work_gflop            XLA cost-analysis FLOPs (a while-loop body counts once: 'map' and
                        the BiLSTM's time scan are undercounted; 'loop' unrolls the tasks)
  bytes_gb              XLA cost-analysis 'bytes accessed' (operands + results of every
                        fused op, as scheduled for THIS backend: an estimate of HBM traffic)
  peak_mem_gb           memory_analysis(): arguments + outputs + temporaries - aliased
                        (donated) bytes, the executable's peak buffer footprint
  compile_s             lower + compile on this machine
`roofline_s` turns FLOPs and bytes into a lower bound on time for a stated accelerator:
max(FLOPs / peak FLOP/s, bytes / memory bandwidth). `H100` gives the peaks assumed, from
NVIDIA's H100 SXM5 datasheet (dense, no sparsity). Real steps are slower than the bound: it
ignores launch overheads, the BiLSTM's 37 sequential timesteps and kernel efficiency.

Run it with `python experiments/benchmark.py --shape=paper --analyse --json=paper_cpu.json`.
"""

import json
import statistics
import time
from typing import Any, Dict, Optional, Sequence

import jax
import ml_collections

from mmtl_jax import meta
from mmtl_jax.ser import losses as ser

# Peak rates assumed for the estimate (H100 SXM5, dense): float32 on CUDA cores, TF32 and
# bf16 on tensor cores, HBM3 bandwidth.
H100 = {'name': 'H100 SXM5', 'fp32_tflops': 67.0, 'tf32_tflops': 494.7,
        'bf16_tflops': 989.4, 'hbm_tb_per_s': 3.35}


def roofline_s(flops: float, bytes_accessed: float, tflops: float, tb_per_s: float) -> float:
  """Lower bound on seconds: the slower of compute at `tflops` and traffic at `tb_per_s`."""
  if tflops <= 0 or tb_per_s <= 0:
    raise ValueError(f'peaks must be positive, got {tflops} TFLOP/s and {tb_per_s} TB/s')
  return max(flops / (tflops * 1e12), bytes_accessed / (tb_per_s * 1e12))


def _step_config(config: Any, mode: str, strategy: str, remat: bool) -> Any:
  c = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
  c.meta.mode, c.meta.strategy, c.meta.remat = mode, meta.resolve_strategy(strategy), remat
  return c


def _abstract_inputs(config: Any, shape: Sequence[int]) -> tuple:
  """(init_fn, step_fn, params, opt_state, batch, key) with batch as ShapeDtypeStructs."""
  tasks, segments, frames, bins = shape
  init_fn, step_fn = ser.make_mmtl_step(config)
  params = ser.init_params(config.model, jax.random.PRNGKey(0), (1, frames, bins))
  opt_state = init_fn(params)
  # Labels and weights at their real shapes; only the spectrogram is left abstract (1 x 1
  # frames here, [tasks, segments, frames, bins] in the struct).
  small = ser.random_batch(tasks, segments, 1, 1, num_aux=3,
                           num_classes=int(config.model.num_outputs))
  batch = {k: jax.ShapeDtypeStruct((tasks, segments, frames, bins) if k == 'x' else v.shape,
                                   v.dtype) for k, v in small.items()}
  return init_fn, step_fn, params, opt_state, batch, jax.random.PRNGKey(1)


def analyse(config: Any, mode: str, strategy: str, shape: Sequence[int],
            remat: bool = False) -> Dict[str, Any]:
  """Compiles one meta-iteration at `shape` (tasks, segments, frames, bins) on the default
  backend without running it; returns XLA's FLOPs, bytes, peak memory and the compile time."""
  step_config = _step_config(config, mode, strategy, remat)
  _, step_fn, params, opt_state, batch, key = _abstract_inputs(step_config, shape)
  start = time.perf_counter()
  compiled = jax.jit(step_fn, donate_argnums=(0, 1)).lower(params, opt_state, batch,
                                                           key).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)
  return {'mode': mode, 'strategy': step_config.meta.strategy, 'remat': remat,
          'shape': list(shape), 'compile_s': compile_s,
          'work_gflop': float(cost.get('flops', 0.0)) / 1e9,
          'bytes_gb': float(cost.get('bytes accessed', 0.0)) / 1e9,
          'peak_mem_gb': peak / 1e9, 'temp_gb': mem.temp_size_in_bytes / 1e9,
          'backend': jax.default_backend()}


def time_step(config: Any, mode: str, strategy: str, shape: Sequence[int],
              iters: int = 1) -> Dict[str, Any]:
  """Runs the step at `shape` for real: one warm-up, then the median of `iters` calls."""
  step_config = _step_config(config, mode, strategy, False)
  tasks, segments, frames, bins = shape
  init_fn, step_fn = ser.make_mmtl_step(step_config)
  params = ser.init_params(step_config.model, jax.random.PRNGKey(0), (1, frames, bins))
  opt_state = init_fn(params)
  batch = jax.device_put(ser.random_batch(tasks, segments, frames, bins, num_aux=3,
                                          num_classes=int(step_config.model.num_outputs)))
  step = jax.jit(step_fn, donate_argnums=(0, 1))
  times = []
  for i in range(iters + 1):
    start = time.perf_counter()
    params, opt_state, _ = step(params, opt_state, batch, jax.random.PRNGKey(i))
    jax.block_until_ready(params)
    times.append(time.perf_counter() - start)
  return {'mode': mode, 'strategy': step_config.meta.strategy, 's_per_iter':
          statistics.median(times[1:]), 'iters_s': times[1:]}


def estimate(record: Dict[str, Any], counts: Optional[Dict[str, Any]] = None,
             peaks: Dict[str, Any] = H100) -> Dict[str, float]:
  """Roofline seconds on `peaks`: 'fp32_s' (float32 on CUDA cores) and 'tf32_s' (tensor
  cores) with the float32 step's FLOPs and bytes; 'bf16_s' at the bf16 tensor-core peak with
  the bytes halved (an assumption: every activation in bf16).

  counts: the record to take FLOPs and bytes from (default `record`); pass the 'loop'
  record for 'map', whose task loop XLA counts once.
  """
  counts = counts or record
  flops, nbytes = counts['work_gflop'] * 1e9, counts['bytes_gb'] * 1e9
  bw = peaks['hbm_tb_per_s']
  return {'fp32_s': roofline_s(flops, nbytes, peaks['fp32_tflops'], bw),
          'tf32_s': roofline_s(flops, nbytes, peaks['tf32_tflops'], bw),
          'bf16_s': roofline_s(flops, nbytes / 2, peaks['bf16_tflops'], bw)}


def report(config: Any, modes: Sequence[str], strategies: Sequence[str],
           shape: Sequence[int], time_first_order: bool = True,
           progress: Any = print) -> Dict[str, Any]:
  """`analyse` for every (mode, strategy) with and without remat, the H100 estimates ('map'
  with its mode's 'loop' counts), and the first_order s/iter of the default strategy here."""
  records = []
  for mode in modes:
    for strategy in strategies:
      for remat in (False, True):
        records.append(analyse(config, mode, strategy, shape, remat))
        progress(format_analysis(records[-1]))
  loops = {(r['mode'], r['remat']): r for r in records if r['strategy'] == 'loop'}
  for r in records:
    counts = loops.get((r['mode'], r['remat'])) if r['strategy'] == 'map' else None
    r['estimate'] = estimate(r, counts)
  out = {'shape': list(shape), 'peaks_assumed': H100, 'records': records}
  if time_first_order and 'first_order' in modes:
    out['first_order_timing'] = time_step(config, 'first_order', 'auto', shape)
    progress(f'first_order ({out["first_order_timing"]["strategy"]}) on '
             f'{jax.default_backend()}: {out["first_order_timing"]["s_per_iter"]:.2f} s/iter')
  return out


def format_analysis(r: Dict[str, Any]) -> str:
  est = r.get('estimate', {})
  tail = ' '.join(f'{k[:-2]} {v * 1e3:.1f} ms' for k, v in est.items())
  tail = f'{H100["name"]}: {tail}' if tail else ''

  return (f'{r["mode"]:<12} {r["strategy"]:<8} remat={str(r["remat"]):<5} '
          f'compile {r["compile_s"]:6.1f} s  {r["work_gflop"]:8.1f} GFLOP  '
          f'{r["bytes_gb"]:7.1f} GB  peak {r["peak_mem_gb"]:6.2f} GB  {tail}')


__all__ = ['analyse', 'estimate', 'format_analysis', 'H100', 'report', 'roofline_s', 'time_step']
