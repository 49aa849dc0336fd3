r"""Makes the pretrained EmoDB bundle shipped in src/mmtl_jax/pretrained/emodb, in one command:

  python experiments/make_pretrained.py --emodb=/data/emodb --workdir=runs/pretrained_emodb \
      --out=src/mmtl_jax/pretrained/emodb

1. the leave-one-speaker-out study of the recipe (--config, MMTL, 'strict' protocol, every
   fold x --seeds) in <workdir>/loso, resumable (start the same command again);
2. the training length: the median of the steps the study selected on its dev speakers;
3. one fit on all ten speakers for that many steps in <workdir>/all_speakers;
4. the bundle (params.npz, config.json, bundle.json recording this command, the config, the
   mmtl_jax version and git commit) and MODEL_CARD.md with the study's figures, in --out.

--emodb is the annotations CSV of an EmoDB copy, or its directory (README: how to build it).
See mmtl_jax.ser.pretrained.
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/make_pretrained.py')  # one line, not a traceback

from absl import app
from absl import flags
from absl import logging

from mmtl_jax import configs
from mmtl_jax.run import checkpoint
from mmtl_jax.run import errors
from mmtl_jax.ser import pretrained

_CONFIG = errors.define_config_file('config', configs.config_path('emodb_small'),
                                    'The recipe (get_config()); its rates were chosen on dev '
                                    'speakers (docs/SETTINGS.md).')
_EMODB = flags.DEFINE_string('emodb', None, 'EmoDB annotations CSV or its directory.',
                             required=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/pretrained_emodb', 'Study and fit directory '
                               '(resumable).')
_OUT = flags.DEFINE_string('out', None, 'The bundle directory to write: a new one, or an '
                           'earlier bundle (replaced); never the workdir, a parent of it or a '
                           'directory of other files.', required=True)
_SEEDS = flags.DEFINE_multi_integer('seeds', [0, 1, 2], 'Seeds of the study, one flag each '
                                    '(the fit uses config.seed).')
_NOTE = flags.DEFINE_string('corpus_note', '', 'How this copy of EmoDB differs from the '
                            'original release, for the model card (e.g. resampled, cut).')
_DTYPE = flags.DEFINE_enum('storage_dtype', 'float32', ['float32', 'float16'],
                           'Storage of the parameters (float16: half the size).')


def main(argv):
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  config.data.manifest.path = pretrained.emodb_manifest(_EMODB.value)
  # --out is replaced whole at the end: refused now, before hours of study, if it is not a
  # bundle (or absent), or if it is the workdir or a parent of it.
  checkpoint.check_bundle_target(_OUT.value, keep=[_WORKDIR.value])
  made = pretrained.make_pretrained(
      config, _WORKDIR.value, _OUT.value, _SEEDS.value,
      about=dict(pretrained.EMODB, corpus_note=_NOTE.value),
      storage_dtype=None if _DTYPE.value == 'float32' else _DTYPE.value)
  print(f"bundle: {made['bundle']}\n{made['info']['loso']}")


if __name__ == '__main__':
  errors.run(main)
