"""Predicts the emotion of wav files (any sample rate or channel count) with a trained model.

  python experiments/predict.py --checkpoint=runs/demo/mmtl/Ses01-testSes01M/bundle a.wav b.wav
  python experiments/predict.py --checkpoint=runs/demo a.wav      # first MMTL fold's bundle

Prints one line per file (emotion and posteriors), or a JSON list with --json. A file that
cannot be read gets an error line; the others are still predicted. Exit status 1 if any
file failed.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

from mmtl_jax.ser import predict

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Bundle, fold directory or workdir.',
                                  required=True)
_JSON = flags.DEFINE_bool('json', False, 'Print a JSON list instead of text lines.')


def main(argv):
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  paths = argv[1:]
  if not paths:
    raise app.UsageError('give one or more wav files')
  predictor = predict.Predictor(_CHECKPOINT.value)
  results = predictor.predict_files(paths)
  if _JSON.value:
    print(json.dumps(results, indent=1))
  else:
    print(f'# model {predictor.model} from {predictor.bundle}')
    for r in results:
      if 'error' in r:
        print(f"{r['path']}: ERROR {r['error']}", file=sys.stderr)
      else:
        post = ' '.join(f'{c}={p:.3f}' for c, p in r['posteriors'].items())
        print(f"{r['path']}: {r['emotion']}  ({post})")
  if any('error' in r for r in results):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
