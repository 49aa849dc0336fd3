"""Trains and evaluates MMTL and the baselines over all folds; writes results.json/md.

  python experiments/train.py                       # the demo on the synthetic corpus
  python experiments/train.py --config=src/mmtl_jax/configs/iemocap.py \
      --config.data.root=/data/IEMOCAP_full_release --workdir=runs/iemocap
  python experiments/train.py --config.meta.mode=exact --config.train.steps=300
  python experiments/train.py --distributed --config.meta.strategy=sharded   # on every host

Start the same command again to resume an interrupted run. SIGTERM (a cluster's preemption
notice) stops training at the next step with a checkpoint of it, one line and exit status 143.

--distributed calls jax.distributed.initialize() first; without --coordinator_address,
--num_processes and --process_id it detects them from the cluster environment (SLURM, Cloud
TPU, ...). Every process runs the same loop; only process 0 writes results.json/md, each
fold's result.json and the inference bundles, while the orbax checkpoints are written
collectively (orbax's multi-host protocol), so the workdir must be on a shared file system.
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/train.py')  # one line, not a traceback

from absl import app
from absl import flags
from absl import logging
import jax

from mmtl_jax import configs
from mmtl_jax.configs import quick
from mmtl_jax.ser import train
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file('config', configs.config_path('demo'),
                                    'Experiment config file (get_config()).',
                                    quick=quick.apply)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Experiment directory (resumable).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Multi-host run: call jax.distributed.initialize() before anything '
    'else uses JAX (use with --config.meta.strategy=sharded).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, "With --distributed: 'host:port' of process 0 (default: "
    'from the cluster environment).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'With --distributed: number of processes (default: from the '
    'cluster environment).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'With --distributed: this process\'s index (default: from the cluster '
    'environment).')


def distributed_kwargs() -> dict:
  """The jax.distributed.initialize() arguments given on the command line (others: auto)."""
  given = {'coordinator_address': _COORDINATOR.value, 'num_processes': _NUM_PROCESSES.value,
           'process_id': _PROCESS_ID.value}
  return {k: v for k, v in given.items() if v is not None}


def main(argv):
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if distributed_kwargs() and not _DISTRIBUTED.value:
    raise app.UsageError('--coordinator_address, --num_processes and --process_id need '
                         '--distributed')
  if _DISTRIBUTED.value:  # before any other use of JAX (devices, jit, arrays)
    jax.distributed.initialize(**distributed_kwargs())
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)  # errors: one line (run/errors.py)


if __name__ == '__main__':
  errors.run(main)
