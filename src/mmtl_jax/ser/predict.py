"""Emotion of wav files with a trained model (an inference bundle written by training, or a
pretrained one shipped with the package: `Predictor(pretrained='emodb')`).

A bundle holds the parameters and the run's config, so the features and the model are
rebuilt exactly as trained. Utterance posterior = mean of its segments' posteriors, each
segment read up to its valid frames only; the posteriors are over the classes, the first
len(classes) outputs of the head (model.num_outputs may be larger: the head is shared with
the auxiliary tasks' bins), as in ser/evaluate.py.

`Predictor.header()` says what the model is: system, corpus, classes, fold, protocol, dev UA
(from bundle.json's 'info', else the fold's result.json beside the bundle, else the config),
and warns when it was trained on synthetic audio: its labels mean nothing for real speech.

No confident label is given for a clip the model cannot judge; its result carries a
'warning', 'emotion' None and 'posteriors' None (no number to misread) instead:
  digital silence  the decoded waveform's peak |amplitude| is below SILENCE_PEAK (1e-4, about
                   -80 dBFS; all-zero files included);
  too short        the clip's longest segment has fewer valid frames than `min_frames`:
                   a quarter of features.n_frames (0.26 s at the demo's 64 frames of 16 ms,
                   0.75 s at the paper's 300 of 10 ms), and never fewer than the
                   2 ** (conv blocks) frames the model's pools need to leave the BiLSTM one;
  non-finite       samples or features that are NaN or infinite (a float wav with samples
                   near 1e20 overflows the power spectrum), or posteriors that are: the model
                   is never trusted with them.
Long files run in batches of at most `batch_segments` segments (features and model), so the
memory a file needs is bounded by the batch, not its length (the waveform is read whole).
A missing file is an error 'file not found'; a bundle that cannot be loaded, or whose
parameters do not fit its model, raises `BundleError` with a one-line message.

Every result also carries three flags; a flagged clip keeps its label and posteriors:
  'not_speech'        why the clip does not look like speech ('' when it does): noise, a pure
                      tone, a steady level, a DC level, near-silence (ser/domain.py: the
                      checks and their thresholds, set so that no EmoDB clip fires);
  'low_confidence'    the largest posterior is below LOW_CONFIDENCE (0.5: the model itself
                      gives its label less than even odds; None without posteriors);
  'in_training_data'  the file's sha256 is one of the bundle's `training_files_sha256` (info
                      of bundle.json; its accuracy on such a file says nothing about new
                      speech); None when the bundle lists no training files.
"""

import glob
import json
import math
import os
import re
import textwrap
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtl_jax import pretrained as pretrained_lib
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.ser import domain
from mmtl_jax.ser import systems as systems_lib
from mmtl_jax.data import features as features_lib

SILENCE_PEAK = 1e-4  # peak |amplitude| (full scale 1.0) below which a clip is digital silence
LOW_CONFIDENCE = 0.5  # max posterior below which a label is flagged: less than even odds
HEADER_WIDTH = 100  # header lines are wrapped to this many characters (a path may exceed it)


class BundleError(errors.ExpectedError, RuntimeError):
  """An inference bundle that exists but cannot be used; the message is one line."""
  exit_code = 2  # experiments/predict.py: 1 is "a file failed"


_STALE = re.compile(r'\.stale-\d+$')  # a fold moved aside by on_changed_config=restart


def _is_bundle(path: str) -> bool:
  return os.path.exists(os.path.join(path, 'bundle.json'))


def _stale(path: str) -> bool:
  return any(_STALE.search(part) for part in path.split(os.sep))


def choose_bundle(path: str) -> tuple:
  """(bundle directory, why it was chosen) for `path`: a bundle itself, a fold directory
  holding `bundle/`, or a workdir (then the first MMTL fold's bundle in sorted order, else the
  first of any model). Folds moved aside by a restart (`<fold>.stale-<n>`) are never chosen.

  Raises:
    FileNotFoundError: no bundle (or only stale ones), naming `path`.
  """
  path = os.path.abspath(path)
  if _stale(path):
    raise FileNotFoundError(f'{path} is a fold moved aside by a restart (stale): its model '
                            'was trained under another config; give a current fold instead')
  for direct in (path, os.path.join(path, 'bundle')):
    if _is_bundle(direct):
      return direct, 'the bundle given'
  passed_over = 0
  for model, pattern in (('mmtl', ('mmtl', '*')), ('mmtl', ('mmtl', '*', '*')),
                         ('any model', ('*', '*')), ('any model', ('*', '*', '*'))):
    found = [c for c in sorted(glob.glob(os.path.join(path, *pattern, 'bundle')))
             if _is_bundle(c)]
    current = [c for c in found if not _stale(os.path.relpath(c, path))]
    passed_over += len(found) - len(current)
    if current:
      return current[0], (f'the first of {len(current)} {model} fold bundles in sorted order'
                          f' ({passed_over} stale moved-aside ones passed over); give a fold '
                          'directory to choose another')
  stale = f' ({passed_over} stale moved-aside ones are never used)' if passed_over else ''
  raise FileNotFoundError(
      f'no inference bundle at {path}{stale}: expected <workdir>/<model>/<fold>/bundle (with '
      'bundle.json), a fold directory, or a workdir produced by experiments/train.py')


def find_bundle(path: str) -> str:
  """The bundle directory `choose_bundle` picks for `path`."""
  return choose_bundle(path)[0]


def one_line(error: BaseException, limit: int = 300) -> str:
  """'Type: first line of the message', at most `limit` characters."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'.rstrip(': ')
  return text if len(text) <= limit else text[:limit - 3] + '...'


def min_frames(config: ml_collections.ConfigDict) -> int:
  """The fewest valid frames a clip's longest segment needs for a label:
  max(ceil(features.n_frames / 4), 2 ** len(model.conv_features)).

  A quarter of a segment is the shortest stretch we treat as speech worth a label (0.26 s of
  the demo's 64 x 16 ms frames; 0.75 s of the paper's 300 x 10 ms); 2 ** blocks is the
  model's own floor, below which its 2x2 pools leave the BiLSTM no frame at all.
  """
  pools = len(tuple(config.model.get('conv_features', ())))
  return max(int(math.ceil(int(config.features.n_frames) / 4)), 2 ** pools)


def clip_warning(wave: np.ndarray, lengths: np.ndarray,
                 config: ml_collections.ConfigDict) -> str:
  """Why a clip (waveform [n], its segments' valid frames [S]) gets no label; '' if none."""
  peak = float(np.max(np.abs(wave))) if wave.size else 0.0
  if peak < SILENCE_PEAK:
    return f'digital silence (peak |amplitude| {peak:.1e} < {SILENCE_PEAK:.0e}); no label'
  need, have = min_frames(config), int(np.max(lengths)) if lengths.size else 0
  if have < need:
    hop = float(config.features.hop_ms) / 1000
    return (f'too short for one segment ({len(wave) / config.features.sample_rate:.3f} s, '
            f'{have} frames < {need} = {need * hop:.2f} s); no label')
  return ''


SYNTHETIC_WARNING = ('WARNING: trained on synthetic audio (the demo corpus), not speech: its '
                     'labels mean nothing')  # one header line: at most HEADER_WIDTH - 2


def corpus_description(config: ml_collections.ConfigDict) -> str:
  """What a config trained on, in words (for bundles whose info does not say)."""
  kind = str(config.data.get('kind', ''))
  if kind == 'synthetic':
    return 'synthetic audio (the embedded demo corpus; not speech)'
  if kind == 'iemocap':
    sessions = ','.join(str(x) for x in config.data.iemocap.sessions)
    return f'IEMOCAP ({config.data.iemocap.selection}, sessions {sessions})'
  if kind == 'manifest':
    return f'CSV manifest {os.path.basename(str(config.data.manifest.path)) or "?"}'
  return kind or 'unknown'


def _fold_result_info(bundle: str) -> Dict[str, Any]:
  """The fold, protocol and dev UA of a training bundle from the fold's result.json beside it
  (bundles written before bundle.json carried them); {} if there is none to read."""
  try:
    with open(os.path.join(os.path.dirname(bundle), 'result.json'), encoding='utf-8') as f:
      result = json.load(f)
    records = result['records']
    protocol = 'strict' if 'strict' in records else next(iter(records))
    return {'fold': result['name'], 'test_speaker': result['test_speaker'],
            'dev_speaker': result['dev_speaker'], 'protocol': protocol,
            'dev_UA': records[protocol]['dev_UA'],
            'selected_step': records[protocol]['selected_step']}
  except (OSError, ValueError, KeyError, TypeError, StopIteration):
    return {}


def describe(bundle: str, config: ml_collections.ConfigDict, classes: Sequence[str],
             model: str) -> Dict[str, Any]:
  """What the bundle's model is: {'model', 'corpus', 'classes', 'fold', 'protocol', 'dev_UA',
  'synthetic'} as text (bool for 'synthetic'), plus any other 'info' bundle.json holds.
  Unknown items read 'unknown'."""
  info = dict(ckpt_lib.read_bundle_info(bundle).get('info') or {}) or _fold_result_info(bundle)
  fold = info.get('fold', 'unknown')
  if info.get('test_speaker') is not None:
    fold = f"{fold} (test speaker {info['test_speaker']}, dev speaker {info.get('dev_speaker')})"
  dev_ua = info.get('dev_UA')
  if isinstance(dev_ua, (int, float)):
    dev_ua = f'{100 * dev_ua:.2f}%' + (f" (step {info['selected_step']})"
                                       if 'selected_step' in info else '')
  synthetic = bool(info.get('synthetic', str(config.data.get('kind', '')) == 'synthetic'))
  return dict(info, model=model, corpus=info.get('corpus') or corpus_description(config),
              classes=', '.join(classes), fold=fold, protocol=info.get('protocol', 'unknown'),
              dev_UA=dev_ua if dev_ua is not None else 'unknown', synthetic=synthetic)


def wrap_items(items: Sequence[str], width: int) -> List[str]:
  """Comment lines ('# ' first, '#   ' on continuations) holding `items` joined by '; ' in
  order; an item moves to a new line rather than being split, unless alone it is longer than
  the line, then it is wrapped at spaces (a word longer than the line stays whole)."""
  lines: List[str] = []
  for item in items:
    if lines and len(lines[-1]) + 2 + len(item) <= width:
      lines[-1] += '; ' + item
    else:
      lines += textwrap.wrap(item, width, initial_indent='# ', subsequent_indent='#   ',
                             break_long_words=False, break_on_hyphens=False) or ['#']
  return lines


class Predictor:
  """Loads a bundle once; `predict_files` scores any number of wav files.

  Args:
    checkpoint: a bundle, fold directory or workdir (`choose_bundle`); or None with
      `pretrained`.
    batch_segments: segments per model call.
    pretrained: the name of a bundle shipped with the package (`mmtl_jax.pretrained.NAMES`),
      instead of `checkpoint`.

  Raises (constructor):
    FileNotFoundError: no bundle at `checkpoint`.
    ValueError: neither or both of checkpoint and pretrained; batch_segments < 1.
    pretrained_lib.UnknownPretrainedError: `pretrained` is no shipped bundle's name.
    BundleError: the bundle is damaged (unreadable files, or parameters that do not fit the
      model its config describes, or fewer outputs than classes); one-line message.
  """

  def __init__(self, checkpoint: Optional[str] = None, batch_segments: int = 64,
               pretrained: Optional[str] = None):
    if int(batch_segments) < 1:
      raise ValueError(f'batch_segments must be >= 1 (got {batch_segments})')
    if (checkpoint is None) == (pretrained is None):
      raise ValueError('give one of checkpoint and pretrained')
    self.batch_segments = int(batch_segments)
    if pretrained is not None:
      self.bundle = pretrained_lib.bundle_path(pretrained)
      self.choice = f'the pretrained {pretrained!r} model shipped with mmtl_jax'
    else:
      self.bundle, self.choice = choose_bundle(checkpoint)
    try:
      self.params, self.config = ckpt_lib.load_inference_bundle(self.bundle)
      self.model = str(self.config.get('bundle_model', 'mmtl'))
      self.classes = tuple(self.config.get('classes', self.config.data.classes))
      if 'name' not in self.config.model:  # bundles written before models were chosen by name
        self.config.model.name = 'cnn_bilstm'  # held the only model there was
      system = systems_lib.make_system(self.model, self.config)
      c = len(self.classes)  # the head's first C outputs are the classes (ser/evaluate.py)
      self._posteriors = jax.jit(lambda p, x, lengths: jax.nn.softmax(
          system.predict_logits(p, x, lengths)[..., :c], axis=-1))
      self._check_shapes()
      self.description = describe(self.bundle, self.config, self.classes, self.model)
      self.training_hashes = frozenset(self.description.pop('training_files_sha256', None)
                                       or ())
    except Exception as e:  # pylint: disable=broad-except
      raise BundleError(f'damaged inference bundle {self.bundle}: {one_line(e)}') from e

  def _check_shapes(self) -> None:
    """Traces one prediction (no compilation): params that do not fit the model, or a head
    with fewer outputs than classes, fail here."""
    outputs = int(self.config.model.get('num_outputs', len(self.classes)))
    if outputs < len(self.classes):
      raise ValueError(f'the model has {outputs} outputs for {len(self.classes)} classes')
    shape = (1, int(self.config.features.n_frames), features_lib.n_bins(self.config.features))
    out = jax.eval_shape(self._posteriors, self.params, jax.ShapeDtypeStruct(shape, jnp.float32),
                         jax.ShapeDtypeStruct((1,), jnp.int32))
    if out.shape != (1, len(self.classes)):
      raise ValueError(f'the model gives {out.shape[-1]} posteriors for {len(self.classes)} '
                       'classes')

  def header(self) -> List[str]:
    """Comment lines saying which bundle this is and what its model is (and, for a model
    trained on synthetic audio, a warning line), each at most HEADER_WIDTH characters unless
    it holds a longer word: line [0] names the bundle (its path whole, however long); [1] starts with
    the fold, then the dev UA and the protocol; then why this bundle was chosen, the corpus
    and classes, the LOSO study if any; line [-1] is the synthetic warning if there is one.
    Names read from bundle.json / config.json (corpus, classes, fold, speakers) and the path
    are shown with control characters escaped (`errors.printable`), before wrapping: no
    escape sequence or newline of a file reaches the terminal."""
    d = self.description
    groups = [[f"fold: {d['fold']}", f"dev UA: {d['dev_UA']}", f"protocol: {d['protocol']}"],
              [f'chosen: {self.choice}'],
              [f"trained on: {d['corpus']}", f"classes: {d['classes']}"]]
    if d.get('loso'):
      groups.append([f"leave-one-speaker-out study of this recipe: {d['loso']}"])
    if d['synthetic']:
      groups.append([SYNTHETIC_WARNING])
    groups = [[errors.printable(item) for item in g] for g in groups]
    return ([errors.printable(f'# model {self.model} from {self.bundle}')]  # the path uncut
            + [line for g in groups for line in wrap_items(g, HEADER_WIDTH)])

  def predict_file(self, path: str) -> Dict[str, Any]:
    """{'path', 'emotion', 'posteriors': {class: p}, 'segments', 'seconds', 'not_speech',
    'low_confidence', 'in_training_data'}, plus 'warning' (and 'emotion' and 'posteriors'
    None) for a clip that gets no label (see the module docstring).

    Raises:
      FileNotFoundError: 'file not found'; any decoding error of the file.
    """
    if not os.path.isfile(path):
      raise FileNotFoundError('file not found')
    wave = features_lib.load_audio(path, self.config.features.sample_rate)
    seconds = len(wave) / float(self.config.features.sample_rate)
    if wave.size == 0:
      return self._flagged(path, wave, {
          'path': path, 'emotion': None, 'posteriors': None, 'segments': 0, 'seconds': 0.0,
          'warning': 'empty audio (0 samples); no label'})
    probs, lengths, finite = self._segment_posteriors(wave)
    result = {'path': path, 'emotion': self.classes[int(np.argmax(probs))],
              'posteriors': {c: float(p) for c, p in zip(self.classes, probs)},
              'segments': int(lengths.shape[0]), 'seconds': seconds}
    warning = clip_warning(wave, lengths, self.config)
    if not finite:
      warning = ('non-finite samples or features (NaN or infinite, e.g. samples near 1e20 '
                 'overflow the spectrum); no label')
    elif not np.all(np.isfinite(probs)):
      warning = 'the model gave non-finite posteriors (NaN or infinite); no label'
    if warning:  # no label, and no posteriors: strict JSON, and no number to misread
      result.update(emotion=None, posteriors=None, warning=warning)
    return self._flagged(path, wave, result)

  def _flagged(self, path: str, wave: np.ndarray, result: Dict[str, Any]) -> Dict[str, Any]:
    """`result` with 'not_speech', 'low_confidence' and 'in_training_data' (module
    docstring); the label and posteriors stay as they are."""
    result['not_speech'] = domain.not_speech(wave, int(self.config.features.sample_rate))
    post = result.get('posteriors')
    result['low_confidence'] = (None if post is None
                                else bool(max(post.values()) < LOW_CONFIDENCE))
    result['in_training_data'] = (domain.file_sha256(path) in self.training_hashes
                                  if self.training_hashes else None)
    return result

  def _segment_posteriors(self, wave: np.ndarray) -> tuple:
    """(mean posterior [classes], valid frames [segments], all inputs finite) of a waveform,
    `batch_segments` segments at a time; the model never sees a non-finite batch."""
    feats = self.config.features
    pieces = features_lib.split_segments(np.asarray(wave, np.float32), feats.sample_rate,
                                         feats.max_segment_s)
    total, lengths, finite = np.zeros(len(self.classes), np.float64), [], True
    for start in range(0, len(pieces), self.batch_segments):
      specs, valid = zip(*(features_lib.segment_spectrogram(s, feats)
                           for s in pieces[start:start + self.batch_segments]))
      x, valid = np.stack(specs), np.asarray(valid, np.int32)
      lengths.append(valid)
      if not (finite and np.all(np.isfinite(x))):
        finite = False  # the other batches still count segments and frames
        continue
      total += np.asarray(self._posteriors(self.params, x, valid), np.float64).sum(axis=0)
    probs = total / len(pieces) if finite else np.full(len(self.classes), np.nan)
    return probs, np.concatenate(lengths), finite and bool(np.all(np.isfinite(wave)))

  def predict_files(self, paths: Sequence[str]) -> List[Dict[str, Any]]:
    """One result per path; a file that is missing ({'path', 'error': 'file not found'}) or
    cannot be decoded ({'path', 'error': 'Type: message'}) does not stop the others."""
    out: List[Dict[str, Any]] = []
    for path in paths:
      try:
        out.append(self.predict_file(path))
      except FileNotFoundError as e:
        out.append({'path': path, 'error': str(e) if str(e) == 'file not found' else one_line(e)})
      except Exception as e:  # pylint: disable=broad-except
        out.append({'path': path, 'error': one_line(e)})
    return out


__all__ = ['BundleError', 'Predictor', 'SILENCE_PEAK', 'SYNTHETIC_WARNING', 'choose_bundle',
           'clip_warning', 'corpus_description', 'describe', 'find_bundle', 'min_frames',
           'one_line', 'LOW_CONFIDENCE', 'HEADER_WIDTH', 'wrap_items']
