"""Predicts the emotion of wav files (any sample rate or channel count) with a trained model.

  python experiments/predict.py --pretrained=emodb a.wav       # shipped with the package
  python experiments/predict.py --checkpoint=runs/demo/mmtl/Ses01-testSes01M/bundle a.wav b.wav
  python experiments/predict.py --checkpoint=runs/demo a.wav      # first MMTL fold's bundle
                                         # (never a <fold>.stale-<n> moved aside by a restart)

--pretrained=emodb is MMTL trained on all ten EmoDB speakers (acted German speech; neutral,
anger, happiness, sadness): src/mmtl_jax/pretrained/emodb/MODEL_CARD.md says what it is and
its limits. It needs no download.

Prints one line per file (emotion and posteriors), or a JSON list with --json. A clip that is
digital silence, too short for one segment or non-finite (samples near 1e20 overflow) gets no
label but a warning ('emotion': null, 'posteriors': null and 'warning' in JSON); see
mmtl_jax.ser.predict. Three flags follow a file's line, its label kept (JSON fields in
brackets): '!! NOT SPEECH? (why)' for noise, a pure tone, a steady or DC level or
near-silence ('not_speech', '' for speech; mmtl_jax.ser.domain has the checks, calibrated so
that no EmoDB clip fires); '!! LOW CONFIDENCE' when the largest posterior is below 0.5
('low_confidence'); '(in the model's training data)' for a file whose sha256 the bundle lists
('in_training_data'; null for a bundle that lists none). First comes a header (on stderr with --json): which bundle was used and
why, what the model was trained on (corpus, classes, fold, protocol, dev UA), and a warning
when that was synthetic audio. Long files run --batch_segments segments at a time. A file
that is missing ('file not found') or cannot be read gets an error line; the others are still
predicted.

Exit status: 0 when every file was predicted (warnings included), 1 if any file failed,
2 when the bundle is missing or damaged (one line on stderr, no traceback).
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/predict.py')  # one line, not a traceback

import json
import sys

from absl import app
from absl import flags
from absl import logging

from mmtl_jax import pretrained
from mmtl_jax.ser import predict
from mmtl_jax.run import errors

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Bundle, fold directory or workdir.')
_PRETRAINED = flags.DEFINE_enum('pretrained', None, list(pretrained.NAMES),
                                'A model shipped with the package, instead of --checkpoint.')
flags.mark_flags_as_mutual_exclusive(['checkpoint', 'pretrained'], required=True)
_JSON = flags.DEFINE_bool('json', False, 'Print a JSON list instead of text lines.')
_BATCH = flags.DEFINE_integer('batch_segments', 64, 'Segments per model call (bounds the '
                              'memory of a long file).', lower_bound=1)


def _flags(r: dict) -> str:
  """The marked flags of a result: '  !! NOT SPEECH? (...)', '  !! LOW CONFIDENCE (...)',
  '  (in the model's training data)'; '' when none is raised."""
  out = ''
  if r.get('not_speech'):
    out += f"  !! NOT SPEECH? ({r['not_speech']})"
  if r.get('low_confidence'):
    top = max(r['posteriors'].values())
    out += f'  !! LOW CONFIDENCE (max posterior {top:.3f} < {predict.LOW_CONFIDENCE})'
  if r.get('in_training_data'):
    out += "  (in the model's training data)"
  return out


def _print_text(predictor: predict.Predictor, results: list) -> None:
  """The header, then one line per file; paths and class names (from the command line and
  the bundle's config) are printed with control characters escaped."""
  print('\n'.join(predictor.header()))  # escaped by header()
  for r in results:
    if 'error' in r:
      print(errors.printable(f"{r['path']}: ERROR {r['error']}"), file=sys.stderr)
    elif r.get('warning'):
      print(errors.printable(f"{r['path']}: no label  (WARNING {r['warning']}){_flags(r)}"))
    else:
      post = ' '.join(f'{c}={p:.3f}' for c, p in r['posteriors'].items())
      print(errors.printable(f"{r['path']}: {r['emotion']}  ({post}){_flags(r)}"))


def main(argv):
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.ERROR)  # and a damaged bundle at WARNING: we say it once
  paths = argv[1:]
  if not paths:
    raise app.UsageError('give one or more wav files')
  try:
    predictor = predict.Predictor(_CHECKPOINT.value, batch_segments=_BATCH.value,
                                  pretrained=_PRETRAINED.value)
  except FileNotFoundError as e:  # exit status 2: the bundle, not a wav file
    errors.fail(str(e), 2)
  results = predictor.predict_files(paths)
  if _JSON.value:
    print('\n'.join(predictor.header()), file=sys.stderr)
    print(json.dumps(results, indent=1))
  else:
    _print_text(predictor, results)
  if any('error' in r for r in results):
    sys.exit(1)


if __name__ == '__main__':
  errors.run(main)
