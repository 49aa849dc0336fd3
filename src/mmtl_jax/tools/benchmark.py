"""Benchmark of one MMTL meta-iteration per meta mode x task strategy.

Each (mode, strategy) is measured in two fresh subprocesses sharing a new, empty persistent
compilation-cache directory: the first compiles cold (and fills the cache), then times the
step; the second only compiles again, now from the warm cache. Subprocesses keep one
combination's memory, threads and caches out of the next one's figures.

Record fields (one per combination; JSON `records`):
  mode, strategy, shape   what ran ('auto' is resolved to the backend's default strategy)
  compile_s               trace + lower + compile, empty persistent cache
  compile_cached_s        the same in a new process with the warm cache
  s_per_iter              median of `iters` (>= 5) timed meta-iterations after one warm-up
  peak_mem_mb             device: peak bytes in use (accelerators); CPU: peak host RSS
  gflops_per_s            work_gflop / s_per_iter
  work_gflop              XLA cost-analysis FLOPs of the compiled step with tasks unrolled
                          ('loop'), so that strategies that loop (map) are not undercounted;
                          XLA counts a while-loop body once, so the BiLSTM's time scan is
                          counted for one timestep (under 1% of the work at these shapes)
  peak_fraction           gflops_per_s / matmul_peak_gflops (below)
  iters_s, backend, device, default_strategy, compile_flops_gflop (this strategy's own count)
  task_groups             'vmap' only: the vmapped groups the tasks ran as (`resolve_groups`)

`matmul_peak_gflops()` measures, in its own fresh subprocess, the float32 matmul rate that jax
reaches on the default device (square matmuls of 1024 and 2048, median of 10 calls each,
the faster size): the step's GFLOP/s is reported as a fraction of it, so a figure means the
same on every machine. `run()` measures it first; experiments/benchmark.py writes it at the
top of its JSON.
"""

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from mmtl_jax.run import errors

SHAPES = {
    # tasks x segments x frames x bins; 'bench' is the shape of REFERENCE_CPU_S, 'paper' the
    # paper's full size.
    'bench': (8, 8, 100, 64),
    'paper': (8, 64, 300, 200),
    'tiny': (2, 2, 16, 16),  # tests only
}
MODES = ('first_order', 'exact', 'reptile')
STRATEGIES = ('loop', 'vmap', 'map', 'sharded')

# Targets of summary(), as ratios measured within one run (docs/PERFORMANCE.md):
TARGETS = {
    'first_order_peak_fraction': 0.75,  # default strategy's GFLOP/s / matmul_peak_gflops, >=
    'exact_over_first_order': 2.2,      # time, default strategy, <=
    'vmap_over_loop': 1.25,             # time, first_order and exact, <=
    'default_over_best': 1.10,          # time, every mode, <=
}
PEAK_SIZES = (1024, 2048)


@dataclasses.dataclass
class Job:
  """One combination to measure; `phase` is 'cold' (compile + time) or 'cached' (compile)."""
  config_json: str
  mode: str
  strategy: str
  shape: str
  iters: int
  cache_dir: str
  phase: str


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _device_peak_mb(device: Any) -> Optional[float]:
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (CPU clients may not implement it)
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / 2**20


def _flops(cost: Any) -> float:
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('flops', 0.0))


def _job_config(job: Job) -> Any:
  """The job's ConfigDict with its meta mode and its strategy ('auto' resolved) set."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mmtl_jax import meta  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(json.loads(job.config_json))
  config.meta.mode = job.mode
  config.meta.strategy = meta.resolve_strategy(job.strategy)
  return config


def _build_step(job: Job, config: Any) -> tuple:
  """(jitted step donating params and opt_state, params, opt_state, batch, key) of `job`.

  Inputs are placed as the strategy needs them: replicated and task-sharded for 'sharded'.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from mmtl_jax.ser import losses as ser  # pylint: disable=g-import-not-at-top
  from mmtl_jax import meta  # pylint: disable=g-import-not-at-top
  tasks, segments, frames, bins = SHAPES[job.shape]
  batch = ser.random_batch(tasks, segments, frames, bins, num_aux=3,
                           num_classes=int(config.model.num_outputs))
  mesh = meta.default_mesh() if config.meta.strategy == 'sharded' else None
  init_fn, step_fn = ser.make_mmtl_step(config, mesh=mesh)
  params = ser.init_params(config.model, jax.random.PRNGKey(0), (1, frames, bins))
  opt_state = init_fn(params)
  if mesh is not None:
    params, opt_state = meta.replicate((params, opt_state), mesh)
    batch = meta.shard_task_batch(batch, mesh)
  else:
    batch = jax.device_put(batch)
  key = jax.random.PRNGKey(1)
  return jax.jit(step_fn, donate_argnums=(0, 1)), params, opt_state, batch, key


def _compile_record(job: Job, config: Any, compiled: Any, compile_s: float) -> Dict[str, Any]:
  """The record fields every phase reports: what ran, where, and the compile time."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmtl_jax import meta  # pylint: disable=g-import-not-at-top
  return {'mode': job.mode, 'strategy': config.meta.strategy, 'shape': job.shape,
          'phase': job.phase, 'compile_s': compile_s,
          'compile_flops_gflop': _flops(compiled.cost_analysis()) / 1e9,
          'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind,
          'devices': jax.device_count(), 'default_strategy': meta.resolve_strategy('auto'),
          'task_groups': (meta.resolve_task_groups(int(config.meta.get('task_groups', 0)),
                                                      SHAPES[job.shape][0])
                          if config.meta.strategy == 'vmap' else None)}


def _time_iterations(job: Job, compiled: Any, params: Any, opt_state: Any, batch: Any,
                     key: Any) -> tuple[List[float], Any, Any, float]:
  """(seconds of each of the 1 + job.iters calls, params, opt_state, last outer loss).

  The first call is the warm-up; params and opt_state are donated, so the latest are returned.

  Raises:
    FloatingPointError: the outer loss is NaN (a broken step must not pass for a fast one).
  """
  import jax  # pylint: disable=g-import-not-at-top
  times = []
  for i in range(job.iters + 1):
    start = time.perf_counter()
    params, opt_state, metrics = compiled(params, opt_state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready((params, opt_state, metrics))
    times.append(time.perf_counter() - start)
  outer_loss = float(metrics['outer_loss'])
  if not outer_loss == outer_loss:  # NaN
    raise FloatingPointError(f'{job.mode}/{job.strategy}: outer loss is NaN')
  return times, params, opt_state, outer_loss


def _work_flops(job: Job, config: Any, compiled: Any, params: Any, opt_state: Any,
                key: Any) -> float:
  """XLA's FLOPs of one iteration with tasks unrolled (see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mmtl_jax.ser import losses as ser  # pylint: disable=g-import-not-at-top
  if config.meta.strategy == 'loop':
    return _flops(compiled.cost_analysis())
  work_config = ml_collections.ConfigDict(json.loads(job.config_json))
  work_config.meta.mode, work_config.meta.strategy = job.mode, 'loop'
  _, work_step = ser.make_mmtl_step(work_config)
  tasks, segments, frames, bins = SHAPES[job.shape]
  host_batch = ser.random_batch(tasks, segments, frames, bins, num_aux=3,
                                num_classes=int(config.model.num_outputs))
  return _flops(jax.jit(work_step).lower(jax.device_get(params), jax.device_get(opt_state),
                                         host_batch, key).compile().cost_analysis())


def measure(job: Job) -> Dict[str, Any]:
  """Runs one job in THIS process (call it in a fresh one: the cache settings are global)."""
  # Imported here so that the parent process, which only starts workers, never loads jax.
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update('jax_compilation_cache_dir', job.cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

  config = _job_config(job)
  step, params, opt_state, batch, key = _build_step(job, config)
  start = time.perf_counter()
  compiled = step.lower(params, opt_state, batch, key).compile()
  record = _compile_record(job, config, compiled, time.perf_counter() - start)
  if job.phase == 'cached':
    return record

  times, params, opt_state, outer_loss = _time_iterations(job, compiled, params, opt_state,
                                                          batch, key)
  # Peak memory before the work count below compiles another step.
  device_peak = _device_peak_mb(jax.devices()[0])
  peak_mb = device_peak if device_peak is not None else _peak_rss_mb()
  # Compiled after the timings, so it costs them nothing.
  work = _work_flops(job, config, compiled, params, opt_state, key)
  s_per_iter = statistics.median(times[1:])
  record.update(s_per_iter=s_per_iter, iters_s=times[1:], warmup_s=times[0],
                outer_loss=outer_loss, work_gflop=work / 1e9,
                gflops_per_s=work / 1e9 / s_per_iter,
                peak_mem_mb=peak_mb,
                peak_mem_kind='device' if device_peak is not None else 'host_rss')
  return record


def measure_matmul_peak(sizes: Sequence[int] = PEAK_SIZES, calls: int = 10) -> Dict[str, Any]:
  """float32 [n, n] @ [n, n] with jax on the default device, in THIS process: for each n the
  median rate of `calls` calls after a warm-up; returns the best size's rate and all rates."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  rates = {}
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(calls):
      start = time.perf_counter()
      matmul(a, b).block_until_ready()
      times.append(time.perf_counter() - start)
    rates[str(n)] = 2 * n**3 / statistics.median(times) / 1e9
  return {'matmul_peak_gflops': max(rates.values()), 'matmul_gflops_by_size': rates,
          'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind}


def matmul_peak_gflops(timeout_s: float = 300) -> Dict[str, Any]:
  """`measure_matmul_peak()` in a fresh subprocess (so the parent never loads jax)."""
  cmd = [sys.executable, '-m', 'mmtl_jax.tools.benchmark', 'peak']
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return {'error': f'peak: timeout after {timeout_s:.0f} s'}
  for line in out.stdout.splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[len('RESULT '):])
  return {'error': 'peak: ' + ' | '.join((out.stderr or out.stdout).strip().splitlines()[-3:])}


def conv_rates(config: Any, shape: str, calls: int = 20) -> List[Dict[str, Any]]:
  """Each convolution of ONE task's meta-learner pass, alone and jitted, in THIS process:
  forward, input gradient (not for the first block: the spectrogram needs none) and filter
  gradient of every conv block of config.model at `shape`'s segments x frames x bins.

  Returns one dict per op: block, op, gflop, wall_ms and cpu_ms (medians of `calls` calls;
  CPU time adds every thread's, so it stays meaningful when other jobs share the cores),
  gflops_per_cpu_s.
  """
  import jax  # pylint: disable=g-import-not-at-top
  # The custom-VJP convolutions' own building blocks, as the step runs them.
  from mmtl_jax.models import conv as conv_lib  # pylint: disable=g-import-not-at-top
  _, n, h, w = SHAPES[shape]
  c_in, rows = 1, []
  for block, (c_out, kernel) in enumerate(zip(config.model.conv_features,
                                              config.model.conv_kernels)):
    kernel = tuple(kernel)
    key = jax.random.PRNGKey(block)
    x = jax.random.normal(key, (n, h, w, c_in))
    dy = jax.random.normal(key, (n, h, w, c_out))
    kern = jax.random.normal(key, kernel + (c_in, c_out))
    # pylint: disable=protected-access
    pads = conv_lib._same_pads(kernel)
    ops = {'forward': (lambda a, b, p=pads: conv_lib._conv(a, b, p), (x, kern)),
           'input_grad': (conv_lib._input_grad, (dy, kern)),
           'filter_grad': (conv_lib._filter_grad_for(kernel), (x, dy))}
    # pylint: enable=protected-access
    gflop = 2 * n * h * w * c_in * c_out * kernel[0] * kernel[1] / 1e9
    for op, (fn, args) in ops.items():
      if op == 'input_grad' and block == 0:
        continue
      wall, cpu = _time_calls(jax.jit(fn), args, calls)
      rows.append({'block': block, 'kernel': kernel, 'channels': (c_in, c_out), 'op': op,
                   'gflop': gflop, 'wall_ms': wall * 1e3, 'cpu_ms': cpu * 1e3,
                   'gflops_per_cpu_s': gflop / cpu})
    c_in, h, w = c_out, h // 2, w // 2
  return rows


def _time_calls(fn: Any, args: Sequence[Any], calls: int) -> tuple:
  """(median wall s, median process CPU s) of `calls` calls of fn(*args) after a warm-up."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  wall, cpu = [], []
  for _ in range(calls):
    start, start_cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall), statistics.median(cpu)


def add_peak_fraction(records: Sequence[Dict[str, Any]], peak_gflops: Optional[float]) -> None:
  """Sets record['peak_fraction'] = gflops_per_s / peak_gflops on every timed record."""
  for r in records:
    if peak_gflops and 'gflops_per_s' in r:
      r['peak_fraction'] = r['gflops_per_s'] / peak_gflops


def _worker(argv: Sequence[str]) -> None:
  if argv[0] == 'peak':
    print('RESULT ' + json.dumps(measure_matmul_peak()), flush=True)
    return
  job = Job(**json.loads(argv[0]))
  print('RESULT ' + json.dumps(measure(job)), flush=True)


def run_isolated(job: Job, timeout_s: float, env: Optional[Dict[str, str]] = None
                 ) -> Dict[str, Any]:
  """Runs `measure(job)` in a new Python process; an error or a timeout becomes a record
  with an 'error' field (the benchmark goes on with the next combination)."""
  cmd = [sys.executable, '-m', 'mmtl_jax.tools.benchmark', json.dumps(dataclasses.asdict(job))]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                         env=dict(os.environ, **(env or {})))
  except subprocess.TimeoutExpired:
    return {'error': f'timeout after {timeout_s:.0f} s'}
  for line in out.stdout.splitlines():
    if line.startswith('RESULT '):
      return json.loads(line[len('RESULT '):])
  tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
  return {'error': f'exit {out.returncode}: ' + ' | '.join(tail)}


class BenchmarkArgumentError(errors.ExpectedError, ValueError):
  """A --modes / --strategies / --shape / --iters value the benchmark does not know."""


def check_choices(modes: Sequence[str], strategies: Sequence[str], shape: str,
                  iters: int = 5) -> None:
  """Refuses, before anything is measured, names outside MODES, STRATEGIES (+ 'auto') and
  SHAPES, and fewer than 5 timed iterations.

  Raises:
    BenchmarkArgumentError (a ValueError): one line naming the value, the flag and the
    choices.
  """
  if shape not in SHAPES:
    raise BenchmarkArgumentError(f'shape {shape!r} is not one of {sorted(SHAPES)}, --shape, '
                                 'give one of them')
  if iters < 5:
    raise BenchmarkArgumentError(f'iters must be >= 5 (median of at least 5), got {iters}, '
                                 '--iters, give 5 or more')
  for mode in modes:
    if mode not in MODES:
      raise BenchmarkArgumentError(f'mode {mode!r} is not one of {MODES}, --modes, give '
                                   'some of them, comma-separated')
  for strategy in strategies:
    if strategy not in STRATEGIES + ('auto',):
      raise BenchmarkArgumentError(f'strategy {strategy!r} is not one of '
                                   f'{STRATEGIES + ("auto",)}, --strategies, give some of '
                                   'them, comma-separated')


def run(config: Any, modes: Sequence[str], strategies: Sequence[str], shape: str,
        iters: int = 5, timeout_s: float = 600, cache_root: Optional[str] = None,
        progress: Any = print, peak_gflops: Optional[float] = None,
        cached: bool = True) -> List[Dict[str, Any]]:
  """Measures every (mode, strategy); returns one record per combination.

  Args:
    config: a full config (config.model and config.meta are used; mode and strategy are set
      per combination).
    modes, strategies: subsets of MODES and STRATEGIES (strategy 'auto' is allowed too).
    shape: 'bench' or 'paper'.
    iters: timed iterations (the median is reported), at least 5.
    timeout_s: per subprocess.
    cache_root: where the per-combination cache directories go (default: a temp dir).
    progress: called with one line of text per finished phase.
    peak_gflops: the machine's matmul peak (`matmul_peak_gflops()`), for 'peak_fraction'.
    cached: also measure the compile from the warm cache (a second subprocess per job).
  """
  check_choices(modes, strategies, shape, iters)
  cache_root = cache_root or tempfile.mkdtemp(prefix='mmtl_bench_cache_')
  config_json = config.to_json_best_effort()
  records = []
  for mode in modes:
    for strategy in strategies:
      cache_dir = tempfile.mkdtemp(prefix=f'{mode}_{strategy}_', dir=cache_root)
      job = Job(config_json, mode, strategy, shape, iters, cache_dir, 'cold')
      record = run_isolated(job, timeout_s)
      if 'error' not in record and cached:
        cached = run_isolated(dataclasses.replace(job, phase='cached'), timeout_s)
        record['compile_cached_s'] = cached.get('compile_s', float('nan'))
        if 'error' in cached:
          record['cached_error'] = cached['error']
      record.setdefault('mode', mode)
      record.setdefault('strategy', strategy)
      record['shape'] = shape
      add_peak_fraction([record], peak_gflops)
      records.append(record)
      progress(format_row(record))
  return records


_COLUMNS = ('mode', 'strategy', 'compile_s', 'compile_cached_s', 's_per_iter', 'peak_mem_mb',
            'gflops_per_s', 'peak_fraction')


def format_row(r: Dict[str, Any]) -> str:
  if 'error' in r:
    return f'{r["mode"]:<12} {r["strategy"]:<8} ERROR {r["error"]}'
  return (f'{r["mode"]:<12} {r["strategy"]:<8} {r["compile_s"]:>9.1f} '
          f'{r.get("compile_cached_s", float("nan")):>10.1f} {r["s_per_iter"]:>10.3f} '
          f'{r["peak_mem_mb"]:>9.0f} {r["gflops_per_s"]:>8.1f} '
          f'{r.get("peak_fraction", float("nan")):>6.2f}')


def format_table(records: Sequence[Dict[str, Any]]) -> str:
  header = (f'{"mode":<12} {"strategy":<8} {"compile_s":>9} {"cached_s":>10} '
            f'{"s_per_iter":>10} {"peak_MB":>9} {"GFLOP/s":>8} {"/peak":>6}')
  return '\n'.join([header] + [format_row(r) for r in records])


def _ratio_line(name: str, value: float, target: float, below: bool) -> str:
  met = value <= target if below else value >= target
  return f'{name}: {value:.2f} (target {"<=" if below else ">="} {target}: ' + (
      'met)' if met else 'NOT met)')


def _mode_lines(by: Dict[Any, Dict[str, Any]], default: str) -> List[str]:
  """Per mode: default vs best strategy, and vmap vs loop."""
  lines = []
  for mode in MODES:
    runs = {s: r for (m, s), r in by.items() if m == mode}
    if not runs:
      continue
    best_s, best = min(runs.items(), key=lambda kv: kv[1]['s_per_iter'])
    if default in runs:
      lines.append(_ratio_line(
          f'{mode}: default {default} {runs[default]["s_per_iter"]:.3f} s / best {best_s} '
          f'{best["s_per_iter"]:.3f} s', runs[default]['s_per_iter'] / best['s_per_iter'],
          TARGETS['default_over_best'], True))
    if 'vmap' in runs and 'loop' in runs:
      lines.append(_ratio_line(
          f'{mode}: vmap {runs["vmap"]["s_per_iter"]:.3f} s / loop '
          f'{runs["loop"]["s_per_iter"]:.3f} s', runs['vmap']['s_per_iter']
          / runs['loop']['s_per_iter'], TARGETS['vmap_over_loop'], True))
  return lines


def summary(records: Sequence[Dict[str, Any]], peak: Optional[Dict[str, Any]] = None
            ) -> List[str]:
  """The performance targets (TARGETS), as lines of ratios measured in this run."""
  ok = [r for r in records if 'error' not in r]
  if not ok:
    return ['no successful record']
  default = ok[0]['default_strategy']
  by = {(r['mode'], r['strategy']): r for r in ok}
  lines = [f'backend {ok[0]["backend"]} ({ok[0]["device"]}, {ok[0]["devices"]} device(s)); '
           f'default strategy: {default}']
  if peak and 'matmul_peak_gflops' in peak:
    lines.append(f'float32 matmul peak (jax): {peak["matmul_peak_gflops"]:.0f} GFLOP/s')
  lines += _mode_lines(by, default)
  fo, ex = by.get(('first_order', default)), by.get(('exact', default))
  if fo and 'peak_fraction' in fo:
    lines.append(_ratio_line(f'first_order ({default}) {fo["gflops_per_s"]:.0f} GFLOP/s / '
                             'matmul peak', fo['peak_fraction'],
                             TARGETS['first_order_peak_fraction'], False))
  if fo and ex:
    lines.append(_ratio_line(f'exact / first_order ({default}), time (FLOPs '
                             f'{ex["work_gflop"] / fo["work_gflop"]:.2f})',
                             ex['s_per_iter'] / fo['s_per_iter'],
                             TARGETS['exact_over_first_order'], True))
  lines.append(f'max cold compile {max(r["compile_s"] for r in ok):.1f} s; max cached compile '
               f'{max(r.get("compile_cached_s", float("nan")) for r in ok):.1f} s')
  return lines


if __name__ == '__main__':
  _worker(sys.argv[1:])


__all__ = [
    'add_peak_fraction', 'BenchmarkArgumentError', 'check_choices', 'conv_rates', 'format_row',
    'format_table', 'Job', 'matmul_peak_gflops',
    'measure', 'measure_matmul_peak', 'MODES', 'PEAK_SIZES', 'run', 'run_isolated', 'SHAPES',
    'STRATEGIES', 'summary', 'TARGETS',
]
