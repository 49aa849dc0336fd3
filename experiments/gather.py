r"""Compares finished experiments: one markdown table row per workdir x model x protocol.

Usage::

  python experiments/gather.py /tmp/mmtl/vad /tmp/mmtl/va /tmp/mmtl/v --out=table.md
  python experiments/gather.py --workdirs=/tmp/mmtl/vad,/tmp/mmtl/va

Each workdir must hold the results.json written by training (mmtl_jax.ser.results).
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/gather.py')  # one line, not a traceback

from collections.abc import Sequence

from absl import app
from absl import flags

from mmtl_jax.run import files
from mmtl_jax.ser import results
from mmtl_jax.run import errors

_WORKDIRS = flags.DEFINE_list('workdirs', [], 'Workdirs to compare (also accepted as '
                              'positional arguments).')
_OUT = flags.DEFINE_string('out', '', 'Also write the table to this markdown file.')
_SKIP_MISSING = flags.DEFINE_bool('skip_missing', False,
                                  'List workdirs without results.json instead of failing.')


def main(argv: Sequence[str]) -> None:
  workdirs = list(argv[1:]) + list(_WORKDIRS.value)
  if not workdirs:
    raise app.UsageError('Give at least one workdir (positional or --workdirs).')
  table = results.gather(workdirs, skip_missing=_SKIP_MISSING.value)
  print(table, end='')
  if _OUT.value:
    files.atomic_write_text(_OUT.value, table)


if __name__ == '__main__':
  errors.run(main)
