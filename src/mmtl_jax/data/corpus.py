"""The corpus contract and its registry: `config.data.kind` -> reader.

A reader is `read(data, workdir) -> (utterances, problems)`: `data` is config.data, `workdir`
the experiment directory (where a reader that writes files, like the synthetic corpus, puts
them; may be None). It returns `mmtl_jax.records.Utterance`s and `Problem`s
({'path', 'reason'}). Readers never open the audio: a missing or unreadable wav is found, and
recorded as skipped, by the feature store. A new corpus is one reader file plus one entry in
`CORPORA` (or `CORPORA.register(kind, read)` from user code).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import ml_collections

from mmtl_jax.data import iemocap, manifest, synthetic
from mmtl_jax.registry import Registry
from mmtl_jax.records import Problem, Utterance
from mmtl_jax.run import errors


class CorpusError(errors.InputError):
  """A corpus whose utterances cannot be told apart (two with one id); a ValueError too."""

CorpusReader = Callable[[ml_collections.ConfigDict, Optional[str]],
                        tuple[list[Utterance], list[Problem]]]

CORPORA: Registry[CorpusReader] = Registry('corpus', 'config.data.kind')
CORPORA.register('iemocap', iemocap.read)
CORPORA.register('synthetic', synthetic.read)
CORPORA.register('manifest', manifest.read)


def read_corpus(config: ml_collections.ConfigDict, workdir: Optional[str] = None
                ) -> tuple[list[Utterance], list[Problem]]:
  """Reads the corpus that config.data describes, with the reader of config.data.kind.

  Returns:
    (utterances sorted by (speaker, utt_id), problems as [{'path', 'reason'}]).

  Raises:
    registry.UnknownNameError: an unknown kind (listing the known ones).
    CorpusError: a duplicated utterance id.
  """
  reader = CORPORA.get(config.data.kind)
  utterances, problems = reader(config.data, None if workdir is None else
                                os.path.abspath(workdir))
  utterances = sorted(utterances, key=lambda u: (u.speaker, u.utt_id))
  seen = {}
  for u in utterances:
    if u.utt_id in seen:  # e.g. a.wav and a.flac of one manifest: one id, one feature row
      raise CorpusError(f'two recordings have the utterance id {u.utt_id!r} (the file name '
                        f'without its extension), {seen[u.utt_id]} and {u.path}, rename one '
                        'or remove one of them from the corpus')
    seen[u.utt_id] = u.path
  return utterances, problems


__all__ = ['CORPORA', 'CorpusError', 'CorpusReader', 'read_corpus']
