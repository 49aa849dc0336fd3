"""Writes the synthetic corpus alone (the console script `mmtl-make-synthetic`).

  mmtl-make-synthetic ROOT [--seed=0]
  python -m mmtl_jax.data.make_synthetic ROOT [--seed=0]

ROOT is the parent directory of IEMOCAP_full_release (see mmtl_jax.data.synthetic); an
existing corpus there is replaced. Prints the number of utterances and the path of the wav
that is unreadable on purpose.
"""

from collections.abc import Sequence

from absl import app
from absl import flags

from mmtl_jax.data import synthetic

_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the corpus (audio, labels and names).')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('Give exactly one ROOT directory (the parent of '
                         f'IEMOCAP_full_release), got {list(argv[1:])}.')
  info = synthetic.write_corpus(argv[1], seed=_SEED.value)
  print(f"wrote {info['utterances']} utterances to {info['root']}")
  print(f"unreadable on purpose: {info['unreadable']}")


def run() -> None:
  """The console script's entry point (it takes no arguments: absl reads sys.argv)."""
  app.run(main)


if __name__ == '__main__':
  run()


__all__ = ['main', 'run']
