r"""Writes the CSV manifest the EmoDB configs read, from the original EmoDB download.

  python experiments/prepare_emodb.py /data/emodb                # -> /data/emodb/annotations.csv
  python experiments/prepare_emodb.py /data/emodb/wav --out=runs/emodb.csv --overwrite
  python experiments/train.py --config=src/mmtl_jax/configs/emodb_small.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=runs/emodb

<emodb dir> is the unpacked download (the directory holding wav/) or wav/ itself. Speaker,
sex, text and emotion come from the file names (03a01Fa.wav); recognition_pct and
naturalness_pct from the perception test's erkennung.txt (and natuerlichkeit.txt) beside wav/
when present (mmtl_jax.data.emodb). Without them the CSV has no rating columns: train with the
':sex' variant of the EmoDB configs (speaker sex as the auxiliary task), e.g.
--config=src/mmtl_jax/configs/emodb_small.py:sex. A ratings file with a sentence rated twice
or a rating outside 0..100 (nan, 150) is refused in one line naming file and line. The last
line printed is the CSV's path.
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/prepare_emodb.py')  # one line, not a traceback

from absl import app
from absl import flags

from mmtl_jax.data import emodb
from mmtl_jax.run import errors

_OUT = flags.DEFINE_string('out', '', 'The CSV to write (default: annotations.csv beside '
                           'wav/). File paths in it are relative to its directory.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace the CSV if it exists (without '
                               'this flag an existing CSV is an error).')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('give one EmoDB directory (the download, holding wav/), e.g. '
                         'python experiments/prepare_emodb.py /data/emodb')
  path, columns, notes = emodb.prepare(argv[1], _OUT.value or None, _OVERWRITE.value)
  for note in notes:
    print(note)
  if 'recognition_pct' not in columns or 'naturalness_pct' not in columns:
    print('without both ratings, train with the configs\' :sex variant, e.g. '
          '--config=src/mmtl_jax/configs/emodb_small.py:sex')
  print(f"columns: {', '.join(columns)}")
  print(path)


if __name__ == '__main__':
  errors.run(main)
