"""A pretrained model that users can try at once: how a shipped bundle is made.

Four steps, all driven by `make_pretrained` (experiments/make_pretrained.py):

  1. The leave-one-speaker-out (LOSO) study of the recipe, `<workdir>/loso`: the experiment
     loop (ser/train.py) with the 'mmtl' system only and the 'strict' protocol only (a user
     of a pretrained model gives it no label), over every fold x seed. It is resumable and
     its results.json is what the model card quotes (`study_summary`).
  2. The training length, chosen without test data: the median of the steps the study
     selected on its dev speakers (`chosen_steps`). The final fit has no dev speaker, so it
     cannot select a step itself.
  3. One fit on all speakers (`fit_all_speakers`, `<workdir>/all_speakers`): the same
     `fold.create_state` / `fold.train_one_step` as a fold, for exactly that many steps,
     with every speaker a task.
  4. The bundle (`write_pretrained`): storage 'npz' (one params.npz, no orbax needed to read
     it), bundle.json's info saying what the model is (corpus, classes, fold, protocol, the
     study's figures, the command, the mmtl_jax version and git commit, and
     'training_files_sha256': the sha256 of every training wav, so that predict can say when
     it is given one of them), and MODEL_CARD.md with those figures filled in.

The 95% interval of the study's mean UA is a percentile bootstrap over the test speakers
(the folds), each speaker's UA averaged over the seeds first: speakers are the independent
units, seeds of one speaker are not.
"""

import os
import shlex
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from mmtl_jax.data import sampler as sampler_lib
from mmtl_jax.data import store as store_lib
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import metric_log
from mmtl_jax.run import process
from mmtl_jax.run import progress
from mmtl_jax.run import provenance as provenance_lib
from mmtl_jax.run import stats
from mmtl_jax.ser import domain
from mmtl_jax.ser import fold as fold_lib
from mmtl_jax.ser import placement as placement_lib
from mmtl_jax.ser import systems as systems_lib
from mmtl_jax.ser import train as train_lib

MODEL, PROTOCOL = 'mmtl', 'strict'
CARD = 'MODEL_CARD.md'

# What the shipped 'emodb' model is, in words (the card and predict's header use them).
EMODB = {
    'name': 'emodb',
    'corpus': 'EmoDB (Berlin Database of Emotional Speech; Burkhardt et al., 2005): acted '
              'German speech, 10 speakers (5 female, 5 male), 10 sentences',
    'language': 'German',
    'speech': 'acted (actors speaking emotionally neutral sentences in a given emotion), '
              'studio recordings',
    'classes_note': "the 4 classes of the IEMOCAP protocol; EmoDB's boredom, disgust and "
                    'fear are left out, so every labelled clip gets one of these 4',
    'use': 'trying the package on real speech, and a small research baseline for acted German '
           'emotional speech. Not for decisions about people',
}

class StudyError(errors.ExpectedError, ValueError):
  """A LOSO study whose results cannot choose the training length or fill the card."""


def emodb_manifest(path: str) -> str:
  """The annotations CSV of an EmoDB copy: `path` itself, or <path>/annotations.csv for a
  directory (README: how to build it); absolute.

  Raises:
    StudyError: neither exists.
  """
  path = os.path.abspath(os.path.expanduser(path))
  csv = os.path.join(path, 'annotations.csv') if os.path.isdir(path) else path
  if not os.path.isfile(csv):
    raise StudyError(f'no EmoDB annotations CSV at {csv}, give --emodb=<the CSV or its '
                     'directory> (the README says how to build annotations.csv)')
  return csv


def study_config(config: ml_collections.ConfigDict, seeds: Sequence[int]
                 ) -> ml_collections.ConfigDict:
  """`config` as the LOSO study runs it: MMTL only, the 'strict' protocol only, the given
  seeds (() = config.seed alone); the folds of config.folds.which (default: every fold)."""
  c = config.copy_and_resolve_references()
  c.train.models = (MODEL,)
  c.eval.protocols = (PROTOCOL,)
  c.train.seeds = tuple(int(s) for s in seeds)
  return c


def _study_run(results: Mapping[str, Any]) -> Mapping[str, Any]:
  runs = [r for r in results.get('runs', ())
          if r.get('model') == MODEL and r.get('protocol') == PROTOCOL]
  if not runs:
    raise StudyError(f"the study's results.json has no {MODEL}/{PROTOCOL} run, run the "
                     'study again (a new --workdir)')
  return runs[0]


def study_summary(results: Mapping[str, Any]) -> Dict[str, Any]:
  """The figures of a LOSO study's results.json (fractions in [0, 1]).

  Returns:
    {'folds', 'seeds', 'records': fold x seed count, 'mean_UA' (over the test speakers, each
    averaged over seeds), 'ci95_UA': [lo, hi] (bootstrap over the speakers), 'std_UA' (over
    the speakers), 'pooled_UA', 'pooled_WA', 'mean_dev_UA', 'per_class_recall',
    'selected_steps': every record's dev-selected step, 'steps' (`chosen_steps`),
    'test_speakers': {speaker: UA averaged over seeds}}.

  Raises:
    StudyError: no MMTL/strict run, or records without their selected step.
  """
  run = _study_run(results)
  by_speaker: Dict[str, List[float]] = {}
  for f in run['folds']:
    by_speaker.setdefault(str(f.get('test_speaker', f['fold'])), []).append(float(f['UA']))
  speaker_ua = {s: float(np.mean(v)) for s, v in sorted(by_speaker.items())}
  values = np.array(list(speaker_ua.values()))
  steps = [f.get('selected_step') for f in run['folds']]
  if any(s is None for s in steps):
    raise StudyError('records of the study lack their selected_step, run the study again with '
                     'this mmtl_jax (a new --workdir)')
  return {
      'folds': len(speaker_ua), 'seeds': list(run['seeds']), 'records': len(run['folds']),
      'mean_UA': float(values.mean()), 'std_UA': float(values.std(ddof=1)) if values.size > 1
      else 0.0, 'ci95_UA': list(stats.bootstrap_interval(values)),
      'pooled_UA': run['pooled']['UA'], 'pooled_WA': run['pooled']['WA'],
      'mean_dev_UA': run['mean']['dev_UA'], 'per_class_recall': run['per_class_recall'],
      'selected_steps': [int(s) for s in steps], 'steps': chosen_steps(steps),
      'test_speakers': speaker_ua}


def chosen_steps(selected_steps: Sequence[int]) -> int:
  """The final fit's training length: the median of the study's dev-selected steps (the
  lower of the two middle ones for an even count, so it is a step some fold selected)."""
  ordered = sorted(int(s) for s in selected_steps)
  if not ordered or ordered[0] < 1:
    raise StudyError(f'no usable selected steps in the study ({ordered}), run it again')
  return ordered[(len(ordered) - 1) // 2]


def fit_all_speakers(config: ml_collections.ConfigDict, workdir: str, features_dir: str,
                     steps: int) -> Tuple[Any, Any]:
  """Trains MMTL on every speaker of the corpus (each one task) for exactly `steps` steps,
  from scratch, seed config.seed; no dev or test speaker.

  Args:
    config: the study's config (its train.steps is replaced by `steps`).
    workdir: where the fit's checkpoints and logs go (<workdir>/checkpoints, logs); an
      earlier fit's are removed first, never resumed.
    features_dir: the workdir whose feature store to use (the study's: a cache hit).
    steps: optimiser steps.

  Returns:
    (host params, the FeatureStore).
  """
  config = config.copy_and_resolve_references()
  config.train.steps = int(steps)
  store = store_lib.build_feature_store(config, features_dir)
  for old in ('checkpoints', 'logs'):  # a fit is never resumed: an earlier one's files go
    shutil.rmtree(os.path.join(workdir, old), ignore_errors=True)
  system = systems_lib.make_system(MODEL, config)
  place_state, place_batch = placement_lib.placement(None)
  state = fold_lib.create_state(system, store, config, place_state)
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), max_to_keep=1,
                                       save_interval_steps=1)
  try:
    with metric_log.MetricWriter(os.path.join(workdir, 'logs'), fold='all_speakers') as mw:
      run = fold_lib.FoldRun(
          step_fn=jax.jit(system.train_step, donate_argnums=(0, 1)),
          sampler=sampler_lib.TaskSampler(store, store.speakers, config, int(config.seed)),
          key=jax.random.key(int(config.seed)), place_batch=place_batch, evaluator=None,
          dev_speaker='', protocols=(), seed=int(config.seed), steps=int(steps),
          log_every=int(config.train.log_every), eval_every=int(steps),
          checkpoint_every=int(config.train.checkpoint_every), checkpointer=checkpointer,
          writer=mw, name=f'{MODEL} on all {len(store.speakers)} speakers',
          reporter=progress.Progress('fit', 1, every_s=progress.interval(config)))
      state = _fit_steps(state, run)
  finally:
    checkpointer.close()
  return jax.device_get(state.params), store


def _fit_steps(state: fold_lib.TrainState, run: fold_lib.FoldRun) -> fold_lib.TrainState:
  """Steps 1 .. run.steps of `fold_lib.train_one_step`, with the parameter guard and a
  checkpoint when due (no dev selection: there is no dev speaker)."""
  run.reporter.start(run.name, run.steps, done=state.step)
  while state.step < run.steps:
    state = fold_lib.train_one_step(state, run)
    if state.step % run.checkpoint_every == 0 or state.step == run.steps:
      fold_lib.check_finite_params(state, run)
      fold_lib.save_state(state, run.checkpointer)
  run.reporter.finish()
  run.reporter.close()
  return state


def _pct(x: Optional[float]) -> str:
  return 'n/a' if x is None else f'{100 * x:.1f}%'


def training_hashes(store: Any) -> List[str]:
  """Sorted unique sha256 (hex) of the wav files of the store's utterances: the files the
  model was trained on (predict flags them). A file gone since the store was built is left
  out: it can no longer be given to predict as it was."""
  paths = {u['path'] for u in store.utterances}
  return sorted({domain.file_sha256(p) for p in paths if os.path.isfile(p)})


def bundle_info(summary: Mapping[str, Any], about: Mapping[str, Any], store: Any,
                provenance: Mapping[str, Any]) -> Dict[str, Any]:
  """bundle.json's 'info' of a pretrained bundle: what predict's header says (corpus, fold,
  protocol, dev UA, the study), how it was made (command, versions, git commit), and the
  sha256 of its training files (`training_hashes`)."""
  lo, hi = summary['ci95_UA']
  speakers = sorted(store.speakers)
  return dict(
      about, synthetic=bool(about.get('synthetic', False)), steps=summary['steps'], utterances=len(store.utterances),
      speakers=speakers,
      fold=f"none: trained on all {len(speakers)} speakers ({', '.join(speakers)}); no test "
           'or dev speaker held out',
      protocol='strict (no label of the speaker it is applied to is used)',
      dev_UA=f"none (no dev speaker): {summary['steps']} steps, the median of the steps the "
             f"LOSO study selected on its dev speakers (their mean dev UA "
             f"{_pct(summary['mean_dev_UA'])})",
      loso=f"test UA {_pct(summary['mean_UA'])} (95% CI {_pct(lo)} to {_pct(hi)}) over "
           f"{summary['folds']} test speakers x {len(summary['seeds'])} seeds, strict "
           'protocol; chance 25%',
      study=dict(summary), command=list(provenance.get('command', ())),
      git_commit=provenance.get('git_commit'), git_dirty=provenance.get('git_dirty'),
      mmtl_jax=(provenance.get('packages') or {}).get('mmtl_jax'), provenance=dict(provenance),
      training_files_sha256=training_hashes(store))


def write_pretrained(out: str, params: Any, config: ml_collections.ConfigDict, store: Any,
                     info: Mapping[str, Any], storage_dtype: Optional[str] = None) -> str:
  """Writes the bundle (storage 'npz') and its MODEL_CARD.md to `out`; returns `out`."""
  bundle_config = ml_collections.ConfigDict(config.to_dict())
  bundle_config.bundle_model = MODEL
  bundle_config.classes = tuple(store.classes)
  out = ckpt_lib.save_inference_bundle(out, params, bundle_config, info=info, storage='npz',
                                       storage_dtype=storage_dtype)
  files.atomic_write_text(os.path.join(out, CARD), model_card(info, bundle_config, params))
  return out


def _card_figures(info: Mapping[str, Any]) -> List[str]:
  """The card's table of the study's figures and its per-speaker line."""
  s = info['study']
  lo, hi = s['ci95_UA']
  recall = ', '.join(f'{c} {_pct(r)}' for c, r in s['per_class_recall'].items())
  speakers = ', '.join(f'{k} {_pct(v)}' for k, v in s['test_speakers'].items())
  return [
      '| figure | value |', '|---|---:|',
      f"| test UA, mean over the {s['folds']} test speakers | {_pct(s['mean_UA'])} |",
      f'| 95% CI of that mean (bootstrap over speakers) | {_pct(lo)} to {_pct(hi)} |',
      f"| std over speakers | {_pct(s['std_UA'])} |",
      f"| pooled UA / WA (all test utterances) | {_pct(s['pooled_UA'])} / "
      f"{_pct(s['pooled_WA'])} |",
      f"| dev UA of the selected steps, mean over the {s['records']} runs | "
      f"{_pct(s['mean_dev_UA'])} |",
      '| chance UA | 25.0% |', '',
      f'Per-class recall (pooled): {recall}.', '',
      f'Test UA per speaker (mean over seeds): {speakers}.']


def _card_what(info: Mapping[str, Any], config: ml_collections.ConfigDict, params: Any
               ) -> List[str]:
  """The card's 'What it is' list."""
  n_params = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  feats = config.features
  return [
      f"- **System**: MMTL (meta multi-task learning, Cai et al., Interspeech 2020), the "
      f"CNN-BiLSTM of Table 1 at laptop scale, {n_params} parameters; auxiliary tasks "
      f"{', '.join(config.data.aux_tasks)} ({config.model.num_outputs} bins each).",
      f"- **Corpus**: {info['corpus']}; {info['utterances']} utterances of the classes below.",
      *([f"- **Data**: {info['corpus_note']}."] if info.get('corpus_note') else []),
      f"- **Language**: {info['language']}. **Speech**: {info['speech']}.",
      f"- **Classes**: {', '.join(config.classes)} ({info['classes_note']}).",
      f"- **Input**: any wav, resampled to {feats.sample_rate} Hz mono; {feats.max_segment_s:g} "
      f"s segments of {feats.n_frames} frames ({feats.hop_ms:g} ms hop); clips under "
      'a quarter of a segment get no label.',
      f"- **Training**: all {len(info['speakers'])} speakers, {info['steps']} meta-steps, "
      f"seed {config.seed}; no speaker held out. Protocol: {info['protocol']}."]


def model_card(info: Mapping[str, Any], config: ml_collections.ConfigDict, params: Any) -> str:
  """MODEL_CARD.md of a pretrained bundle: every figure from `info` (the study it ran)."""
  s = info['study']
  return '\n'.join([
      f"# Model card: pretrained `{info['name']}` (MMTL, {len(config.classes)} emotions)", '',
      f"`experiments/predict.py --pretrained={info['name']} a.wav` uses it, offline.", '',
      '## What it is', '', *_card_what(info, config, params), '',
      '## How well the recipe did: leave-one-speaker-out study', '',
      f"The same recipe, trained {s['records']} times (each of the {s['folds']} speakers "
      f"held out as the test speaker, the next one as dev speaker; seeds "
      f"{', '.join(map(str, s['seeds']))}), 'strict' protocol (no label of the test speaker), "
      'parameters selected on the dev speaker. UA = mean per-class recall.', '',
      *_card_figures(info), '',
      f"Training length of this model: {info['steps']} steps = the median of the "
      f"{s['records']} steps the study selected on its dev speakers "
      f"({', '.join(map(str, sorted(s['selected_steps'])))}): chosen without test data. The "
      "config's learning rates were chosen on dev speakers (docs/SETTINGS.md: EmoDB folds "
      "0-2); those speakers are test speakers of other folds, so the study's figures may be "
      'slightly optimistic.', '',
      '## Intended use and limits', '',
      f"- Intended use: {info['use']}.",
      f"- {len(info['speakers'])} speakers of one corpus, {info['speech']}: expect much lower "
      'accuracy on spontaneous speech, other languages, other microphones or noisy channels '
      '(not measured).',
      f'- Every labelled clip gets one of the {len(config.classes)} classes, even when it '
      'expresses none of them. Predict marks clips that do not look like speech (noise, a '
      'pure tone, a steady or DC level, near-silence: `mmtl_jax.ser.domain`, calibrated so '
      'that no EmoDB clip is flagged), labels whose largest posterior is below 0.5, and files '
      'this model was trained on (`training_files_sha256` in `bundle.json`).',
      f"- The study's interval is over {s['folds']} speakers: it says how much the UA varies "
      'with the speaker, not how the model does on speakers unlike these.', '',
      '## Reproduce', '',
      '```', f"python {shlex.join(info['command'])}" if info['command'] else '(unknown)',
      '```', '',
      f"mmtl_jax {info.get('mmtl_jax')}, git commit {info.get('git_commit')}"
      f"{' (with uncommitted changes)' if info.get('git_dirty') else ''}; the config is "
      "`config.json`, the rest of the record `bundle.json`'s `info`. The parameters derive "
      'from EmoDB: respect its terms of use.', ''])


def make_pretrained(config: ml_collections.ConfigDict, workdir: str, out: str,
                    seeds: Sequence[int], about: Mapping[str, Any] = EMODB,
                    storage_dtype: Optional[str] = None) -> Dict[str, Any]:
  """The LOSO study (resumed if begun) in <workdir>/loso, the fit on all speakers for the
  median selected step in <workdir>/all_speakers, and the bundle with its card in `out`.

  Args:
    about: the words of the card and header: 'name', 'corpus', 'language', 'speech',
      'classes_note', 'use', optionally 'corpus_note' (e.g. how this copy of the corpus
      differs from the original); see EMODB.

  Returns:
    {'bundle': out, 'info': bundle.json's info}.
  """
  t0 = time.time()
  config = study_config(config, seeds)
  study_dir = os.path.join(workdir, 'loso')
  summary = study_summary(train_lib.train_and_evaluate(config, study_dir))
  print(f"study: test UA {_pct(summary['mean_UA'])} (95% CI {_pct(summary['ci95_UA'][0])} to "
        f"{_pct(summary['ci95_UA'][1])}); final fit: {summary['steps']} steps", flush=True)
  params, store = fit_all_speakers(config, os.path.join(workdir, 'all_speakers'), study_dir,
                                   summary['steps'])
  config.train.steps = summary['steps']
  about = dict(about, synthetic=str(config.data.kind) == 'synthetic')
  info = bundle_info(summary, about, store, provenance_lib.provenance(t0, time.time()))
  return {'bundle': write_pretrained(out, params, config, store, info, storage_dtype),
          'info': info}


__all__ = [
    'bundle_info', 'CARD', 'chosen_steps', 'EMODB', 'emodb_manifest', 'fit_all_speakers',
    'make_pretrained', 'model_card', 'study_config', 'study_summary', 'StudyError',
    'write_pretrained',
]
