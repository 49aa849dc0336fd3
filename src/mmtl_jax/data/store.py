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
                  counts {'utterances'|'segments': {speaker: {label: count}}},
                  'skipped': [{path, utt_id, reason}] for every missing or unreadable wav
                  and every one whose features are not finite (NaN/Inf: huge or non-finite
                  samples), and 'content_hash': {file: sha256} of the files above and of
                  the manifest's own content.

The cache key hashes the data and features config (all but `workers`), the utterance table
the reader returned and features.VERSION, so a change to any is a miss; wav contents are not
hashed. The directory is written under a temporary name (`.tmp-<key>-<host>-<pid>`) and
renamed when complete: a crash leaves no half cache (a store directory without manifest.json,
which only a copy or deletion cut short leaves, is removed and built anew). A wav that cannot
be read is skipped and listed, never dropped silently.

Integrity is checked on what was stored: the corpus readers' rules (every class has an
utterance, every speaker keeps min_utterances_per_speaker) are applied again after the skips,
and auxiliary bins beyond model.num_outputs are refused before any feature is extracted. A
reused store is checked against its content hash (a damaged, truncated or edited file is a
`StoreDamagedError` that says to delete the directory); a full disk is one OSError naming the
file, checked before writing and never a SIGBUS (features.npy is written without a memory map).

Interrupted builds leave nothing running and, in the end, nothing on disk: the feature
workers die with the process that started them (SIGKILL included: Linux's parent-death
signal, and a watchdog thread elsewhere; mmtl_jax.run.workers); SIGTERM and Ctrl-C stop the
workers and remove the temporary directory; one left by a killed process is removed by the
next build on the host, decided by the owner (pid, host, start time) recorded in it, never by
its age, so a long build is never removed under its feet (mmtl_jax.run.tmp_dirs).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
from typing import Any, Callable, Optional, Sequence

import ml_collections
import numpy as np

from mmtl_jax import records
from mmtl_jax.data import corpus as corpus_lib
from mmtl_jax.data import features as features_lib
from mmtl_jax.data import synthetic
from mmtl_jax.run import errors
from mmtl_jax.run import progress
from mmtl_jax.run import tmp_dirs
from mmtl_jax.run import workers as workers_lib

_ARRAYS = ('utt_index', 'speaker', 'label', 'aux', 'length')
# Files whose sha256 manifest.json's 'content_hash' holds (and 'manifest.json': its own
# content without that field).
_HASHED = ('features.npy',) + tuple(f'{name}.npy' for name in _ARRAYS) + ('utterances.json',)
# Part of the cache key. 2: content hashes, non-finite features skipped, integrity re-checked
# on what was stored; stores of format 1 are rebuilt, never reused.
FORMAT = 2
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class StoreDamagedError(errors.ExpectedError, RuntimeError):
  """A store directory whose files are missing, truncated, or differ from their content
  hash; the message names the file and says how to recover (delete the directory). Expected:
  the entry points print it as one line."""


class OldStoreError(StoreDamagedError, ValueError):
  """A store written before segment lengths were recorded (no length.npy)."""


class StoreInputError(errors.InputError):
  """A corpus selection the store cannot be built from (empty, a class or speaker emptied by
  skipped files, aux bins beyond the model's outputs); nothing was stored. A ValueError too."""


class NothingReadableError(errors.ExpectedError, RuntimeError):
  """Not one utterance of the corpus could be read (a RuntimeError, as before)."""


def _recover(directory: str) -> str:
  return f'delete {directory} and run again (the store is rebuilt from the audio)'


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
                     'version': features_lib.VERSION, 'store_format': FORMAT},
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _features_or_reason(job: tuple[str, dict]
                        ) -> tuple[Optional[tuple[np.ndarray, np.ndarray]], str]:
  """((segments in storage dtype, int32 valid frames), '') or (None, why it could not be
  read or gave non-finite features: one line). Worker entry."""
  path, features = job
  features = ml_collections.ConfigDict(features)
  if not os.path.exists(path):
    return None, 'missing wav'
  if not os.path.isfile(path):  # a FIFO would block the read forever, a device never end
    return None, 'not a regular file (a directory, FIFO or device)'
  try:
    with np.errstate(over='ignore', invalid='ignore'):  # non-finite results are checked below
      segments, lengths = features_lib.file_segments(path, features)
  except Exception as e:  # pylint: disable=broad-except
    # Any decoding failure (truncated header, garbage, empty audio) skips this one file.
    return None, ' '.join(f'unreadable: {type(e).__name__}: {e}'.split())
  stored = segments.astype(features.dtype)
  # Checked after the cast: float16 storage overflows where float32 did not.
  bad = int((~np.isfinite(stored)).reshape(len(stored), -1).any(axis=1).sum())
  if bad:
    return None, (f'non-finite features (NaN or Inf) in {bad} of {len(stored)} segment(s): '
                  f'the audio holds non-finite or huge samples, or overflows {stored.dtype}')
  return (stored, lengths), ''


def _in_process(jobs: list, name: str, every_s: float) -> list:
  with progress.Progress('features', every_s=every_s, unit='utt', heartbeat=every_s > 0) as p:
    return list(p.track(map(_features_or_reason, jobs), name, len(jobs)))


def _compute(paths: list[str], features: dict, workers: int, name: str,
             every_s: float = progress.DEFAULT_EVERY_S) -> list:
  """`_features_or_reason` of every path, in `workers` processes (0: one per core), with
  progress as unit `name` of 'features' (a line every `every_s` s where stdout is no
  terminal; the ETA counts from the first utterance, after librosa's warm-up)."""
  jobs = [(p, features) for p in paths]
  workers = workers or os.cpu_count() or 1
  if workers == 1 or len(jobs) < 2:
    return _in_process(jobs, name, every_s)
  method = workers_lib.start_method()
  try:
    with progress.Progress('features', every_s=every_s, unit='utt',
                           heartbeat=every_s > 0) as reporter:
      return workers_lib.map_in_pool(_features_or_reason, jobs, workers, method, name,
                                     reporter=reporter)
  except concurrent.futures.process.BrokenProcessPool:
    # Typically a spawned worker re-ran a __main__ script that lacks the
    # `if __name__ == '__main__':` guard. The result does not depend on the workers.
    logging.warning('feature workers (%s) failed; computing in this process instead. Guard the '
                    "script's entry point with `if __name__ == '__main__':` to use %d workers.",
                    method, workers)
    return _in_process(jobs, name, every_s)


def _counts(speakers: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, int]]:
  counts: dict[str, dict[str, int]] = {}
  for s, l in zip(speakers, labels):
    counts.setdefault(s, {}).setdefault(l, 0)
    counts[s][l] += 1
  return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}


def _read_all(utterances: Sequence[records.Utterance], fcfg: dict, workers: int, key: str,
              every_s: float = progress.DEFAULT_EVERY_S
              ) -> tuple[list[tuple[records.Utterance, np.ndarray, np.ndarray]], list[dict]]:
  """([(utterance, its [S, T, F] segments, their [S] valid frames)] in input order,
  [{path, utt_id, reason}] skipped).

  Raises:
    RuntimeError: no utterance could be read (an empty store is never useful).
  """
  results = _compute([u.path for u in utterances], fcfg, workers, key, every_s)
  kept, skipped = [], []
  for u, (segments, reason) in zip(utterances, results):
    if segments is None:
      skipped.append({'path': u.path, 'utt_id': u.utt_id, 'reason': reason})
    else:
      kept.append((u,) + tuple(segments))
  if not kept:
    raise NothingReadableError(f'no utterance could be read ({len(skipped)} skipped: '
                               f'{_files(skipped)}), config.data, check the audio paths and '
                               'the features settings')
  return kept, skipped


def _files(lost: list[dict]) -> str:
  """'path (reason), ...' of skipped files, at most 3 and a count of the rest."""
  shown = ', '.join(f"{x['path']} ({x['reason']})" for x in lost[:3])
  return shown + (f' and {len(lost) - 3} more' if len(lost) > 3 else '')


def _speaker_minimum(data: ml_collections.ConfigDict) -> tuple[str, int]:
  """(field, value) of the corpus' min_utterances_per_speaker, ('', 1) where it has none."""
  section = data.get(data.kind)
  if hasattr(section, 'get') and section.get('min_utterances_per_speaker') is not None:
    return (f'data.{data.kind}.min_utterances_per_speaker',
            int(section.min_utterances_per_speaker))
  return '', 1


def check_stored(data: ml_collections.ConfigDict, utterances: Sequence[records.Utterance],
                 kept: Sequence[tuple], skipped: list[dict]) -> None:
  """The corpus readers' integrity rules applied again to what was stored, after unreadable
  and non-finite files were skipped: every class of data.classes has an utterance, and every
  speaker the reader returned keeps at least the corpus' min_utterances_per_speaker (1 for
  corpora without one, so no speaker silently disappears from the folds).

  Raises:
    ValueError (one line) naming each class or speaker and the skipped files that cost it.
  """
  by_id = {u.utt_id: u for u in utterances}
  lost_by = collections.defaultdict(list)
  for x in skipped:
    u = by_id[x['utt_id']]
    lost_by[('speaker', u.speaker)].append(x)
    lost_by[('class', u.label)].append(x)
  stored = collections.Counter(u.speaker for u, *_ in kept)
  labels = {u.label for u, *_ in kept}
  field, minimum = _speaker_minimum(data)
  problems = []
  for speaker in sorted({u.speaker for u in utterances}):
    if stored[speaker] < max(minimum, 1):
      lost = lost_by[('speaker', speaker)]
      problems.append(f'speaker {speaker!r} has {stored[speaker]} stored utterance(s)'
                      + (f', fewer than {field}={minimum}' if field else '')
                      + f', after {len(lost)} of its file(s) were skipped: {_files(lost)}')
  for label in data.classes:
    if label not in labels:
      lost = lost_by[('class', label)]
      problems.append(f'class {label!r} has no stored utterance' + (
          f', after {len(lost)} file(s) were skipped: {_files(lost)}' if lost else
          ': no utterance of the corpus has it (check data.classes)'))
  if problems:
    raise StoreInputError('feature store: ' + '; '.join(problems) + '. Repair or replace '
                          'those files, or remove their rows; nothing was stored.')


def check_aux_bins(config: ml_collections.ConfigDict,
                   utterances: Sequence[records.Utterance]) -> None:
  """ValueError when an auxiliary bin index reaches model.num_outputs (the head that the aux
  tasks share with the classes): checked before any feature is extracted."""
  num = config.get('model', {}).get('num_outputs')
  if num is None or not utterances or not config.data.aux_tasks:
    return
  data = config.data
  section = data.get(data.kind)
  source = (section.get('path') if hasattr(section, 'get') else '') or data.get('root') or ''
  source = os.path.abspath(os.path.expanduser(source)) if source else f'data.kind={data.kind!r}'
  aux = np.array([u.aux for u in utterances], np.int64).reshape(len(utterances), -1)
  for j, name in enumerate(data.aux_tasks):
    values = int(aux[:, j].max()) + 1
    if values > int(num):
      raise StoreInputError(f'{source}: aux task {name!r} has {values} values (bins '
                            f'0..{values - 1}) but model.num_outputs={num}, the outputs its '
                            'head shares with the classes: merge values of the column or raise '
                            'model.num_outputs')


def _utterance_row(u: records.Utterance, n_segments: int) -> dict:
  """One utterances.json row."""
  return {'utt_id': u.utt_id, 'speaker': u.speaker, 'label': u.label, 'path': u.path,
          'session': u.session, 'dialog': u.dialog, 'aux': list(u.aux),
          'aux_raw': None if u.aux_raw is None else list(u.aux_raw), 'n_segments': n_segments}


def _open_new(path: str):
  """The binary file that features.npy is written to (a test swaps in /dev/full)."""
  return open(path, 'wb')


@contextlib.contextmanager
def _disk_full_names(path: str):
  """Turns 'no space left' / 'quota exceeded' while writing `path` into one OSError that names
  it and says what to do."""
  try:
    yield
  except OSError as e:
    if e.errno not in _DISK_FULL:
      raise
    raise OSError(e.errno, f'{path}: no space left on the device (or quota exceeded) while '
                  'writing the feature store; free space or use another --workdir, then run '
                  'again') from None


def _check_free_space(directory: str, nbytes: int) -> None:
  """OSError(ENOSPC) before anything is written when the file system has less than `nbytes`
  free (a memory map written beyond the free space dies of SIGBUS, a write fails midway)."""
  try:
    st = os.statvfs(directory)
  except OSError:  # a file system that cannot say: the writes still report a full disk
    return
  free = st.f_bavail * st.f_frsize
  if free < nbytes:
    raise OSError(errno.ENOSPC, f'no space left for the features of the store: {nbytes / 1e6:.1f}'
                  f' MB needed, {free / 1e6:.1f} MB free under {directory}; free space or use '
                  'another --workdir')


def _write_features(path: str, kept: Sequence[tuple], shape: tuple[int, ...],
                    dtype: np.dtype) -> None:
  """features.npy [N_seg, T, F], written in order with plain writes: the segments are never
  held twice in memory, and a full disk is an OSError, not the SIGBUS of a memory map."""
  header = {'descr': np.lib.format.dtype_to_descr(dtype), 'fortran_order': False,
            'shape': shape}
  with _disk_full_names(path), _open_new(path) as f:
    np.lib.format.write_array_header_1_0(f, header)
    for _, feats, _ in kept:
      f.write(np.ascontiguousarray(feats, dtype).tobytes())


def _write_segments(directory: str,
                    kept: Sequence[tuple[records.Utterance, np.ndarray, np.ndarray]],
                    shape: tuple[int, ...], dtype: np.dtype, speakers: list[str],
                    classes: tuple[str, ...], num_aux: int) -> None:
  """Writes features.npy [N_seg, T, F], the [N_seg] arrays of _ARRAYS and utterances.json."""
  _write_features(os.path.join(directory, 'features.npy'), kept, shape, dtype)
  arrays = {name: [] for name in _ARRAYS}
  table = []
  for i, (u, feats, lengths) in enumerate(kept):
    arrays['length'] += list(lengths)
    arrays['utt_index'] += [i] * len(feats)
    arrays['speaker'] += [speakers.index(u.speaker)] * len(feats)
    arrays['label'] += [classes.index(u.label)] * len(feats)
    arrays['aux'] += [u.aux] * len(feats)
    table.append(_utterance_row(u, len(feats)))
  with _disk_full_names(directory):
    for name, values in arrays.items():
      value = np.asarray(values, np.int32)
      if name == 'aux':
        value = value.reshape(shape[0], num_aux)
      np.save(os.path.join(directory, f'{name}.npy'), value)
    with open(os.path.join(directory, 'utterances.json'), 'w') as f:
      json.dump(table, f, indent=0)


def _file_sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def content_hashes(directory: str, manifest: dict) -> dict[str, str]:
  """{file: sha256} of the store's files, and 'manifest.json': the sha256 of the manifest's
  content without its 'content_hash' field (as parsed JSON, keys sorted)."""
  out = {name: _file_sha256(os.path.join(directory, name)) for name in _HASHED}
  body = {k: v for k, v in manifest.items() if k != 'content_hash'}
  out['manifest.json'] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
  return out


def _manifest_counts(kept: Sequence[tuple[records.Utterance, np.ndarray, np.ndarray]]) -> dict:
  """{'utterances' | 'segments': {speaker: {label: count}}}."""
  seg_speakers = [u.speaker for u, feats, _ in kept for _ in range(len(feats))]
  seg_labels = [u.label for u, feats, _ in kept for _ in range(len(feats))]
  return {'utterances': _counts([u.speaker for u, *_ in kept], [u.label for u, *_ in kept]),
          'segments': _counts(seg_speakers, seg_labels)}


def _write(directory: str, config: ml_collections.ConfigDict, key: str,
           utterances: Sequence[records.Utterance], problems: list) -> None:
  """Computes every utterance's segments, checks what could be read (`check_stored`) and
  writes the store into `directory`; manifest.json last, with the content hashes."""
  fcfg = config.features.to_dict()
  kept, skipped = _read_all(utterances, fcfg, config.features.workers, key,
                            progress.interval(config))
  check_stored(config.data, utterances, kept, skipped)
  classes, aux_tasks = tuple(config.data.classes), tuple(config.data.aux_tasks)
  speakers = sorted({u.speaker for u, *_ in kept})
  n_seg = sum(len(f) for _, f, _ in kept)
  shape = (n_seg,) + kept[0][1].shape[1:]
  dtype = np.dtype(config.features.dtype)
  # The features, their int32 arrays, the JSON tables (a generous guess) and a margin.
  _check_free_space(directory, int(np.prod(shape)) * dtype.itemsize + n_seg * 64 + (1 << 20)
                    + 1024 * len(kept))
  _write_segments(directory, kept, shape, dtype, speakers, classes, len(aux_tasks))
  manifest = {
      'config_hash': key,
      'data': config.data.to_dict(),
      'features': fcfg,
      'classes': list(classes),
      'aux_tasks': list(aux_tasks),
      'speakers': speakers,
      'shape': list(shape),
      'dtype': str(dtype),
      'counts': _manifest_counts(kept),
      'totals': {'utterances': len(kept), 'segments': n_seg, 'skipped': len(skipped)},
      'skipped': skipped,
      'problems': problems,
  }
  manifest = json.loads(json.dumps(manifest, default=str))  # hashed as it will be read back
  manifest['content_hash'] = content_hashes(directory, manifest)
  with _disk_full_names(directory), open(os.path.join(directory, 'manifest.json'), 'w') as f:
    json.dump(manifest, f, indent=1)


def _read_json(path: str, directory: str) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise StoreDamagedError(f'{path}: cannot be read ({type(e).__name__}: {e}); '
                            f'{_recover(directory)}') from None


def _load_array(path: str, directory: str) -> np.ndarray:
  try:
    return np.load(path)
  except (OSError, ValueError, EOFError) as e:
    raise StoreDamagedError(f'{path}: cannot be read ({type(e).__name__}: {e}); '
                            f'{_recover(directory)}') from None


def _open_features(directory: str, manifest: dict) -> np.ndarray:
  """features.npy memory-mapped read-only, once its size is what its header says (a
  truncated file would map, and fault when the missing rows are read)."""
  path = os.path.join(directory, 'features.npy')
  try:
    with open(path, 'rb') as f:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                     np.lib.format.read_array_header_2_0)
      shape, _, dtype = read_header(f)
      expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
    size = os.path.getsize(path)
  except (OSError, ValueError) as e:
    raise StoreDamagedError(f'{path}: not a readable .npy file ({type(e).__name__}: {e}); '
                            f'{_recover(directory)}') from None
  if size != expected:
    what = 'truncated' if size < expected else 'longer than its header says'
    raise StoreDamagedError(f'{path} is {what}: {size} bytes where {tuple(shape)} {dtype} '
                            f'takes {expected}; {_recover(directory)}')
  if list(shape) != list(manifest.get('shape', shape)):
    raise StoreDamagedError(f'{path} holds {tuple(shape)}, its manifest says '
                            f"{manifest['shape']}; {_recover(directory)}")
  return np.load(path, mmap_mode='r')


def verify_store(directory: str, manifest: dict) -> None:
  """StoreDamagedError naming every file of the store that differs from the content hash
  its manifest.json recorded when it was written (an edit, a zeroed span, a swapped order)."""
  expected = manifest.get('content_hash')
  if not isinstance(expected, dict):
    raise StoreDamagedError(f'{directory}/manifest.json has no content hash (edited, or written '
                            f'by an older mmtl_jax); {_recover(directory)}')
  try:
    actual = content_hashes(directory, manifest)
  except OSError as e:
    raise StoreDamagedError(f'{e.filename}: cannot be read ({e.strerror}); '
                            f'{_recover(directory)}') from None
  changed = sorted(name for name in actual if expected.get(name) != actual[name])
  if changed:
    raise StoreDamagedError(f'{directory}: {", ".join(changed)} differ(s) from the content '
                            'hash written with the store (edited or damaged since); '
                            f'{_recover(directory)}')


def load_store(directory: str, cache_hit: bool = True, verify: bool = True) -> FeatureStore:
  """Opens a complete store directory (features memory-mapped read-only).

  Args:
    directory: the store directory (<workdir>/features/<hash>).
    cache_hit: recorded in the returned store.
    verify: check every file against the content hash of manifest.json (reads them all;
      docs/PERFORMANCE.md has the cost). `build_feature_store` verifies a reused store, not
      one it has just written.

  Raises:
    OldStoreError (a ValueError): a store written before segment lengths were recorded;
      `build_feature_store` never opens one, since its cache key differs.
    StoreDamagedError: a file missing, unreadable, truncated or (verify) differing from its
      content hash; the message names it and says to delete the directory.
  """
  if not os.path.exists(os.path.join(directory, 'length.npy')):
    raise OldStoreError(f'{directory} was written by an older version (no length.npy); '
                        f'{_recover(directory)}')
  manifest_path = os.path.join(directory, 'manifest.json')
  manifest = _read_json(manifest_path, directory)
  table = _read_json(os.path.join(directory, 'utterances.json'), directory)
  features = _open_features(directory, manifest)
  arrays = {name: _load_array(os.path.join(directory, f'{name}.npy'), directory)
            for name in _ARRAYS}
  if verify:
    verify_store(directory, manifest)
  return FeatureStore(
      features=features, speakers=list(manifest['speakers']), utterances=table,
      classes=tuple(manifest['classes']), aux_tasks=tuple(manifest['aux_tasks']),
      manifest=manifest, manifest_path=manifest_path, cache_hit=cache_hit, **arrays)


def _remove_incomplete(final: str) -> None:
  """Removes `final` if it is there without manifest.json: a store is renamed into place
  whole, with its manifest, so such a directory is never a complete store (a copy or a
  deletion cut short) and would make every later rename fail with 'Directory not empty'; a
  file or dangling link of that name would fail it with 'Not a directory'."""
  if os.path.exists(os.path.join(final, 'manifest.json')):
    return
  if os.path.isdir(final) and not os.path.islink(final):
    logging.warning('%s has no manifest.json: an incomplete store; removed, built anew', final)
    shutil.rmtree(final, ignore_errors=True)
  elif os.path.lexists(final):
    logging.warning('%s is not a store directory; removed, built anew', final)
    os.remove(final)


def _build(root: str, final: str, key: str, config: ml_collections.ConfigDict,
           utterances: Sequence[records.Utterance], problems: list) -> None:
  """Writes the store under a temporary name in `root` and renames it to `final`."""
  tmp_dirs.remove_stale_tmp(root)
  with workers_lib.sigterm_raises():
    tmp = tmp_dirs.make_tmp_dir(root, key)  # with its owner marker: live builds are kept
    try:
      _write(tmp, config, key, utterances, problems)
      tmp_dirs.release(tmp)  # the marker is no file of the store
      _remove_incomplete(final)
      try:
        os.rename(tmp, final)
      except OSError:  # another process finished the same store first: theirs is as good
        if not os.path.exists(os.path.join(final, 'manifest.json')):
          raise
    finally:
      shutil.rmtree(tmp, ignore_errors=True)


def build_feature_store(config: ml_collections.ConfigDict, workdir: str,
                        utterances: Optional[Sequence[records.Utterance]] = None,
                        check_corpus: Optional[Callable[[Sequence[records.Utterance]], Any]]
                        = None) -> FeatureStore:
  """The store of `config`'s corpus under `workdir`/features/<hash>/, built if absent.

  Args:
    config: the full config (data, features; model.num_outputs bounds the aux bins).
    workdir: experiment directory; the synthetic corpus (kind='synthetic', no data.root) is
      written to `workdir`/synthetic_corpus.
    utterances: use these instead of reading the corpus (their problems list is then empty).
    check_corpus: called with the utterances before any feature is extracted (or a stored
      store reused), e.g. to build the folds; whatever it raises stops the build.

  Returns:
    The FeatureStore; `cache_hit` says whether it was reused (then checked against its
    content hash).

  Raises:
    ValueError: an empty selection, aux bins beyond model.num_outputs (both before
      extraction), or a class or speaker emptied by skipped files (`check_stored`).
    StoreDamagedError: a reused store whose files were damaged or edited.
    OSError(ENOSPC): too little free space, named before writing or where the write failed.
  """
  problems: list[Any] = []
  if utterances is None:
    utterances, problems = corpus_lib.read_corpus(config, workdir)
  if not utterances:
    raise StoreInputError('the corpus selection is empty, config.data, check its classes, '
                          'selection, sessions and label_map')
  if check_corpus is not None:
    check_corpus(utterances)
  check_aux_bins(config, utterances)
  key = config_hash(config, utterances)
  root = os.path.join(os.path.abspath(workdir), 'features')
  final = os.path.join(root, key)
  if os.path.exists(os.path.join(final, 'manifest.json')):
    return load_store(final, cache_hit=True)
  _build(root, final, key, config, utterances, problems)
  return load_store(final, cache_hit=False, verify=False)


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
  deliberate = [synthetic.unreadable_on_purpose(s['path']) for s in skipped]
  lines.append(f'skipped: {len(skipped)}' + (f' ({sum(deliberate)} on purpose)'
                                             if any(deliberate) else ''))
  lines += [f'  {s["path"]}: {s["reason"]}' + (
      ' [deliberate: the synthetic corpus writes this one wav unreadable to show that skipped '
      'files are listed; nothing is wrong]' if d else '') for s, d in zip(skipped, deliberate)]
  lines += [f'left out: {p["path"]}: {p["reason"]}' for p in store.manifest.get('problems', [])]
  lines.append(f'cache: {"hit" if store.cache_hit else "built"} {store.directory}')
  # Speaker names and paths come from the corpus' files: no escape sequence reaches a terminal.
  return '\n'.join(errors.printable(line) for line in lines)


__all__ = [
    'build_feature_store', 'check_aux_bins', 'check_stored', 'config_hash', 'content_hashes',
    'FeatureStore', 'FORMAT', 'format_summary', 'load_store', 'NothingReadableError',
    'OldStoreError', 'StoreDamagedError', 'StoreInputError', 'verify_store',
]
