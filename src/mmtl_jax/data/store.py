"""The feature store: every segment's spectrogram and labels, computed once and cached.

On disk, under `<workdir>/features/<config_hash>/`::

  features.npy    [N_seg, n_frames, n_bins] in config.features.dtype (opened with mmap)
  utt_index.npy   [N_seg] int32, row of the segment's utterance in utterances.json
  speaker.npy     [N_seg] int32, index into manifest['speakers'] (sorted names)
  label.npy       [N_seg] int32, index into manifest['classes']
  aux.npy         [N_seg, k] int32, auxiliary bin indices in the order of manifest['aux_tasks']
  length.npy      [N_seg] int32, valid (unpadded) frames of each segment, <= n_frames
  utterances.json one row per utterance with features: utt_id, speaker, label, path, ...
  manifest.json   config_hash, the data/features config, classes, aux_tasks, speakers,
                  counts {'utterances'|'segments': {speaker: {label: count}}}, and
                  'skipped': [{path, reason}] for every missing or unreadable wav.

The cache key hashes the data and features config (all but `workers`), the utterance table
the reader returned and features.VERSION, so a change to any is a miss; wav contents are not
hashed. The directory is written under a temporary name (`.tmp-<key>-<host>-<pid>`) and
renamed when complete: a crash leaves no half cache. A wav that cannot be read is skipped and
listed, never dropped silently.

Interrupted builds leave nothing running and, in the end, nothing on disk: the feature
workers die with the process that started them (SIGKILL included: Linux's parent-death
signal, and a watchdog thread elsewhere; mmtl_jax.run.workers); SIGTERM and Ctrl-C stop the
workers and remove the temporary directory; one left by a killed process is removed by the
next build on the host (mmtl_jax.run.tmp_dirs).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np
import tqdm

from mmtl_jax import records
from mmtl_jax.data import corpus as corpus_lib
from mmtl_jax.data import features as features_lib
from mmtl_jax.run import tmp_dirs
from mmtl_jax.run import workers as workers_lib

_ARRAYS = ('utt_index', 'speaker', 'label', 'aux', 'length')


@dataclasses.dataclass
class FeatureStore:
  """Segments of a corpus (host numpy, features memory-mapped).

  Attributes:
    features: [N, T, F] spectrogram segments (time, frequency), storage dtype.
    utt_index: [N] int32 row of each segment's utterance in `utterances`.
    speaker: [N] int32 index into `speakers`.
    speakers: sorted speaker names.
    label: [N] int32 index into `classes`.
    aux: [N, k] int32 auxiliary bin indices, in the order of `aux_tasks`.
    length: [N] int32 valid frames of each segment (the rest of its T frames are padding).
    utterances: one dict per utterance (utt_id, speaker, label, path, n_segments, ...).
    classes: class names; aux_tasks: auxiliary task names.
    manifest: the parsed manifest.json; manifest_path: its path.
    cache_hit: whether this store was loaded from an existing cache.
  """
  features: np.ndarray
  utt_index: np.ndarray
  speaker: np.ndarray
  speakers: list[str]
  label: np.ndarray
  aux: np.ndarray
  length: np.ndarray
  utterances: list[dict]
  classes: tuple[str, ...]
  aux_tasks: tuple[str, ...]
  manifest: dict
  manifest_path: str
  cache_hit: bool = False

  def __len__(self) -> int:
    return len(self.label)

  @property
  def directory(self) -> str:
    return os.path.dirname(self.manifest_path)

  def speaker_index(self, name: str) -> int:
    """Index of speaker `name` in `speakers`; KeyError listing the known ones if absent."""
    try:
      return self.speakers.index(name)
    except ValueError:
      raise KeyError(f'speaker {name!r} not in the store; speakers: {self.speakers}') from None

  def rows(self, speakers: Sequence[str] | str) -> np.ndarray:
    """Sorted int64 segment rows of one speaker name or a sequence of names."""
    names = [speakers] if isinstance(speakers, str) else list(speakers)
    wanted = np.array([self.speaker_index(n) for n in names], np.int32)
    return np.flatnonzero(np.isin(self.speaker, wanted))

  def segments_by_speaker(self) -> dict[str, np.ndarray]:
    """{speaker name: segment rows}."""
    return {name: np.flatnonzero(self.speaker == i) for i, name in enumerate(self.speakers)}


def config_hash(config: ml_collections.ConfigDict,
                utterances: Sequence[records.Utterance]) -> str:
  """16 hex digits of sha256 over the data/features config and the utterance table."""
  features = config.features.to_dict()
  features.pop('workers', None)  # does not change the result
  table = [dataclasses.astuple(u) for u in utterances]
  blob = json.dumps({'data': config.data.to_dict(), 'features': features, 'table': table,
                     'version': features_lib.VERSION},
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _features_or_reason(job: tuple[str, dict]
                        ) -> tuple[Optional[tuple[np.ndarray, np.ndarray]], str]:
  """((segments in storage dtype, int32 valid frames), '') or (None, why it could not be
  read). Worker entry."""
  path, features = job
  features = ml_collections.ConfigDict(features)
  if not os.path.exists(path):
    return None, 'missing wav'
  try:
    segments, lengths = features_lib.file_segments(path, features)
    return (segments.astype(features.dtype), lengths), ''
  except Exception as e:  # pylint: disable=broad-except
    # Any decoding failure (truncated header, garbage, empty audio) skips this one file.
    return None, f'unreadable: {type(e).__name__}: {e}'


def _compute(paths: list[str], features: dict, workers: int, desc: str) -> list:
  jobs = [(p, features) for p in paths]
  workers = workers or os.cpu_count() or 1
  if workers == 1 or len(jobs) < 2:
    return [_features_or_reason(j) for j in tqdm.tqdm(jobs, desc=desc, unit='utt')]
  method = workers_lib.start_method()
  try:
    return workers_lib.map_in_pool(_features_or_reason, jobs, workers, method, desc)
  except concurrent.futures.process.BrokenProcessPool:
    # Typically a spawned worker re-ran a __main__ script that lacks the
    # `if __name__ == '__main__':` guard. The result does not depend on the workers.
    logging.warning('feature workers (%s) failed; computing in this process instead. Guard the '
                    "script's entry point with `if __name__ == '__main__':` to use %d workers.",
                    method, workers)
    return [_features_or_reason(j) for j in tqdm.tqdm(jobs, desc=desc, unit='utt')]


def _counts(speakers: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, int]]:
  counts: dict[str, dict[str, int]] = {}
  for s, l in zip(speakers, labels):
    counts.setdefault(s, {}).setdefault(l, 0)
    counts[s][l] += 1
  return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}


def _read_all(utterances: Sequence[records.Utterance], fcfg: dict, workers: int, key: str
              ) -> tuple[list[tuple[records.Utterance, np.ndarray, np.ndarray]], list[dict]]:
  """([(utterance, its [S, T, F] segments, their [S] valid frames)] in input order,
  [{path, utt_id, reason}] skipped).

  Raises:
    RuntimeError: no utterance could be read (an empty store is never useful).
  """
  results = _compute([u.path for u in utterances], fcfg, workers, desc=f'features {key}')
  kept, skipped = [], []
  for u, (segments, reason) in zip(utterances, results):
    if segments is None:
      skipped.append({'path': u.path, 'utt_id': u.utt_id, 'reason': reason})
    else:
      kept.append((u,) + tuple(segments))
  if not kept:
    raise RuntimeError(f'no utterance could be read ({len(skipped)} skipped, e.g. '
                       f'{skipped[:3]})')
  return kept, skipped


def _utterance_row(u: records.Utterance, n_segments: int) -> dict:
  """One utterances.json row."""
  return {'utt_id': u.utt_id, 'speaker': u.speaker, 'label': u.label, 'path': u.path,
          'session': u.session, 'dialog': u.dialog, 'aux': list(u.aux),
          'aux_raw': None if u.aux_raw is None else list(u.aux_raw), 'n_segments': n_segments}


def _write_segments(directory: str,
                    kept: Sequence[tuple[records.Utterance, np.ndarray, np.ndarray]],
                    shape: tuple[int, ...], dtype: np.dtype, speakers: list[str],
                    classes: tuple[str, ...], num_aux: int) -> None:
  """Writes features.npy [N_seg, T, F], the [N_seg] arrays of _ARRAYS and utterances.json.

  features.npy is filled through a memmap, so the segments are never held twice in memory.
  """
  out = np.lib.format.open_memmap(os.path.join(directory, 'features.npy'), 'w+', dtype, shape)
  arrays = {name: [] for name in _ARRAYS}
  table, row = [], 0
  for i, (u, feats, lengths) in enumerate(kept):
    out[row:row + len(feats)] = feats
    row += len(feats)
    arrays['length'] += list(lengths)
    arrays['utt_index'] += [i] * len(feats)
    arrays['speaker'] += [speakers.index(u.speaker)] * len(feats)
    arrays['label'] += [classes.index(u.label)] * len(feats)
    arrays['aux'] += [u.aux] * len(feats)
    table.append(_utterance_row(u, len(feats)))
  out.flush()
  del out
  for name, values in arrays.items():
    value = np.asarray(values, np.int32)
    if name == 'aux':
      value = value.reshape(shape[0], num_aux)
    np.save(os.path.join(directory, f'{name}.npy'), value)
  with open(os.path.join(directory, 'utterances.json'), 'w') as f:
    json.dump(table, f, indent=0)


def _manifest_counts(kept: Sequence[tuple[records.Utterance, np.ndarray, np.ndarray]]) -> dict:
  """{'utterances' | 'segments': {speaker: {label: count}}}."""
  seg_speakers = [u.speaker for u, feats, _ in kept for _ in range(len(feats))]
  seg_labels = [u.label for u, feats, _ in kept for _ in range(len(feats))]
  return {'utterances': _counts([u.speaker for u, *_ in kept], [u.label for u, *_ in kept]),
          'segments': _counts(seg_speakers, seg_labels)}


def _write(directory: str, config: ml_collections.ConfigDict, key: str,
           utterances: Sequence[records.Utterance], problems: list) -> None:
  """Computes every utterance's segments and writes the store into `directory`."""
  fcfg = config.features.to_dict()
  kept, skipped = _read_all(utterances, fcfg, config.features.workers, key)
  classes, aux_tasks = tuple(config.data.classes), tuple(config.data.aux_tasks)
  speakers = sorted({u.speaker for u, *_ in kept})
  n_seg = sum(len(f) for _, f, _ in kept)
  shape = (n_seg,) + kept[0][1].shape[1:]
  _write_segments(directory, kept, shape, np.dtype(config.features.dtype), speakers, classes,
                  len(aux_tasks))
  manifest = {
      'config_hash': key,
      'data': config.data.to_dict(),
      'features': fcfg,
      'classes': list(classes),
      'aux_tasks': list(aux_tasks),
      'speakers': speakers,
      'shape': list(shape),
      'dtype': str(np.dtype(config.features.dtype)),
      'counts': _manifest_counts(kept),
      'totals': {'utterances': len(kept), 'segments': n_seg, 'skipped': len(skipped)},
      'skipped': skipped,
      'problems': problems,
  }
  with open(os.path.join(directory, 'manifest.json'), 'w') as f:
    json.dump(manifest, f, indent=1, default=str)


def load_store(directory: str, cache_hit: bool = True) -> FeatureStore:
  """Opens a complete store directory (features memory-mapped read-only).

  Raises:
    ValueError: a store written before segment lengths were recorded (features.VERSION 1);
      `build_feature_store` never opens one, since its cache key differs.
  """
  if not os.path.exists(os.path.join(directory, 'length.npy')):
    raise ValueError(f'{directory} was written by an older version (no length.npy); build '
                     'the store again (build_feature_store computes it anew)')
  manifest_path = os.path.join(directory, 'manifest.json')
  with open(manifest_path) as f:
    manifest = json.load(f)
  with open(os.path.join(directory, 'utterances.json')) as f:
    table = json.load(f)
  arrays = {name: np.load(os.path.join(directory, f'{name}.npy')) for name in _ARRAYS}
  return FeatureStore(
      features=np.load(os.path.join(directory, 'features.npy'), mmap_mode='r'),
      speakers=list(manifest['speakers']), utterances=table,
      classes=tuple(manifest['classes']), aux_tasks=tuple(manifest['aux_tasks']),
      manifest=manifest, manifest_path=manifest_path, cache_hit=cache_hit, **arrays)


def build_feature_store(config: ml_collections.ConfigDict, workdir: str,
                        utterances: Optional[Sequence[records.Utterance]] = None
                        ) -> FeatureStore:
  """The store of `config`'s corpus under `workdir`/features/<hash>/, built if absent.

  Args:
    config: the full config (data, features).
    workdir: experiment directory; the synthetic corpus (kind='synthetic', no data.root) is
      written to `workdir`/synthetic_corpus.
    utterances: use these instead of reading the corpus (their problems list is then empty).

  Returns:
    The FeatureStore; `cache_hit` says whether it was reused.
  """
  problems: list[Any] = []
  if utterances is None:
    utterances, problems = corpus_lib.read_corpus(config, workdir)
  if not utterances:
    raise ValueError('the corpus selection is empty: check config.data (classes, selection, '
                     'sessions, label_map)')
  key = config_hash(config, utterances)
  root = os.path.join(os.path.abspath(workdir), 'features')
  final = os.path.join(root, key)
  if os.path.exists(os.path.join(final, 'manifest.json')):
    return load_store(final, cache_hit=True)
  tmp_dirs.remove_stale_tmp(root)
  tmp = os.path.join(root, tmp_dirs.tmp_dir_name(key))
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with workers_lib.sigterm_raises():
    try:
      _write(tmp, config, key, utterances, problems)
      try:
        os.rename(tmp, final)
      except OSError:  # another process finished the same store first: theirs is as good
        if not os.path.exists(os.path.join(final, 'manifest.json')):
          raise
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return load_store(final, cache_hit=False)


def format_summary(store: FeatureStore) -> str:
  """Table of utterances/segments per speaker and class, totals and skipped files."""
  counts = store.manifest['counts']
  classes = list(store.classes)
  width = max(8, max(len(s) for s in store.speakers) + 1)
  head = f'{"speaker":<{width}}' + ''.join(f'{c:>11}' for c in classes) + f'{"total":>11}'
  lines = [f'corpus: {len(store.utterances)} utterances, {len(store)} segments of shape '
           f'{tuple(store.features.shape[1:])}, {len(store.speakers)} speakers; '
           'cells: utterances/segments', head, '-' * len(head)]
  totals = {c: [0, 0] for c in classes}
  for s in store.speakers:
    u, g = counts['utterances'].get(s, {}), counts['segments'].get(s, {})
    cells = []
    for c in classes:
      totals[c][0] += u.get(c, 0)
      totals[c][1] += g.get(c, 0)
      cells.append(f'{u.get(c, 0)}/{g.get(c, 0)}')
    row_total = f'{sum(u.values())}/{sum(g.values())}'
    lines.append(f'{s:<{width}}' + ''.join(f'{x:>11}' for x in cells) + f'{row_total:>11}')
  lines.append('-' * len(head))
  lines.append(f'{"total":<{width}}' + ''.join(f'{f"{a}/{b}":>11}' for a, b in totals.values())
               + f'{f"{len(store.utterances)}/{len(store)}":>11}')
  skipped = store.manifest['skipped']
  lines.append(f'skipped: {len(skipped)}')
  lines += [f'  {s["path"]}: {s["reason"]}' for s in skipped]
  lines += [f'left out: {p["path"]}: {p["reason"]}' for p in store.manifest.get('problems', [])]
  lines.append(f'cache: {"hit" if store.cache_hit else "built"} {store.directory}')
  return '\n'.join(lines)
