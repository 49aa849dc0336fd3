"""Base configuration: the paper's settings (Cai et al., Interspeech 2020) on IEMOCAP.

Every other config imports this one and overrides a few fields. Any field can be set from the
command line, e.g.::

  python experiments/train.py --config=src/mmtl_jax/configs/iemocap.py \
      --config.data.root=/data/IEMOCAP_full_release --config.meta.mode=exact
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # JAX persistent compilation cache: later runs skip recompiling the steps. '' = off.
  c.compilation_cache_dir = '~/.cache/mmtl_jax/jax'

  # ---- corpus ----------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  # The corpus reader, by name (mmtl_jax.data.corpus.CORPORA): 'iemocap', 'synthetic' (the
  # embedded corpus, written in the IEMOCAP layout and read by the same reader) or 'manifest'.
  c.data.kind = 'iemocap'
  # kind='iemocap': IEMOCAP_full_release or its parent. kind='synthetic': where the corpus is
  # (or is written); '' = <workdir>/synthetic_corpus.
  c.data.root = ''
  c.data.classes = ('neu', 'ang', 'hap', 'sad')  # order = class index
  # Auxiliary tasks, any subset and order of ('valence', 'activation', 'dominance') for IEMOCAP,
  # or of the manifest's aux column names. Table 3 ablations change only this field.
  c.data.aux_tasks = ('valence', 'activation', 'dominance')
  # kind='iemocap' and 'synthetic' (same reader).
  c.data.iemocap = ml_collections.ConfigDict()
  c.data.iemocap.sessions = (1, 2, 3, 4, 5)
  c.data.iemocap.selection = 'improvised'  # 'improvised' | 'scripted' | 'all'
  c.data.iemocap.merge_exc = False  # SpeechBrain/s3prl convention: count 'exc' as 'hap'.
  # V/A/D bin edges of section 3.1.1: [1,2) [2,3) [3,4) [4,6); outside [1, 6) is bad input.
  c.data.iemocap.vad_edges = (1.0, 2.0, 3.0, 4.0, 6.0)
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.seed = 0  # the synthetic corpus is a deterministic function of it
  # kind='manifest': a CSV with path/speaker/label columns (paths relative to the CSV).
  c.data.manifest = ml_collections.ConfigDict()
  c.data.manifest.path = ''
  c.data.manifest.path_column = 'path'
  c.data.manifest.speaker_column = 'speaker'
  c.data.manifest.label_column = 'label'
  # {column: 'categorical'} or {column: (edge0, edge1, ...)} for numeric columns.
  c.data.manifest.aux_columns = ml_collections.ConfigDict()
  c.data.manifest.label_map = ml_collections.ConfigDict()  # optional raw label -> class name
  # Speakers with fewer utterances (of data.classes) are left out, with a line in the summary:
  # a dev or test speaker with a handful of utterances gives a meaningless UA.
  c.data.manifest.min_utterances_per_speaker = 5

  # ---- features (section 3.1.1) ------------------------------------------------------------
  c.features = ml_collections.ConfigDict()
  c.features.sample_rate = 16000
  c.features.hop_ms = 10.0
  # The paper's "200 ms" window cannot fit a DFT of 800 samples; 50 ms = 800 samples does.
  c.features.win_ms = 50.0
  c.features.n_fft = 800
  c.features.fmax = 4000.0  # keep bins in [0, fmax): 200 bins at 16 kHz / 800.
  c.features.n_frames = 300  # pad with zeros or cut to this many frames
  c.features.max_segment_s = 3.0  # longer utterances: equal pieces of at most this length
  c.features.log_floor = 1e-10
  c.features.normalise = 'segment'  # 'segment' (zero mean, unit var per segment) | 'none'
  c.features.dtype = 'float16'  # storage dtype of the feature store
  c.features.workers = 0  # 0 = all cores

  # ---- folds (section 3.1.2) ---------------------------------------------------------------
  c.folds = ml_collections.ConfigDict()
  c.folds.scheme = 'session'  # 'session' (IEMOCAP) | 'speaker' (leave one speaker out)
  c.folds.dev_gender = 'F'  # session scheme: which speaker of the held-out session is dev
  c.folds.swap = False  # also run every fold with dev and test swapped (all 10 tested)
  c.folds.which = ()  # subset of fold indices to run; () = all
  c.folds.class_weights = 'speaker'  # 'speaker' (paper) | 'pooled' (reference code)

  # ---- model (Table 1) ---------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  # The module, by name (mmtl_jax.models.MODELS); the other fields are its constructor's.
  c.model.name = 'cnn_bilstm'
  c.model.conv_features = (16, 24, 32)
  c.model.conv_kernels = ((12, 16), (8, 12), (5, 7))  # (time, freq)
  c.model.lstm_hidden = 128  # per direction
  c.model.fc_hidden = 64
  c.model.num_outputs = 4  # the shared head: 4 emotions / 4 V/A/D bins
  c.model.dropout = 0.0
  c.model.dtype = 'float32'  # compute dtype; 'bfloat16' for accelerators

  # ---- meta-learning (section 2, eqs. 4-7) -------------------------------------------------
  # Turned into a MetaSpec by mmtl_jax.ser.losses.mmtl_spec (meta.recipes.mmtl).
  c.meta = ml_collections.ConfigDict()
  # 'first_order' (FOMAML: theta gets the outer loss's gradient at theta'), 'exact' (through
  # eqs. 4-5), 'reptile' (params - adapted; with one inner step theta never sees the outer
  # loss), 'reptile_emotion' (Reptile + first_order: the reference code), or a registered one.
  c.meta.mode = 'first_order'
  # The task axis: 'auto' (CPU: loop, else vmap), 'vmap', 'map', 'loop', 'sharded' (devices).
  c.meta.strategy = 'auto'
  c.meta.inner_steps = 1  # steps of eq. 4 and, after them, of eq. 5
  c.meta.alpha = 0.01  # inner rate of eq. 4 (theta)
  c.meta.beta = 0.01  # inner rate of eq. 5 (phi)
  c.meta.gamma = 0.001  # outer Adam rate of eqs. 6-7
  c.meta.remat = False  # recompute each inner step in the backward pass (exact mode memory)
  c.meta.task_chunk = 0  # tasks per chunk, accumulated (0 = all at once)
  c.meta.task_groups = 0  # vmap's concurrent groups of tasks (0 = 2 per CPU core / 1)
  c.meta.task_reduce = 'mean'  # or 'sum' (what eqs. 6-7 write; Adam is invariant to it)
  c.meta.log_inner_after = True  # also report the auxiliary loss at theta' (metrics only)

  # ---- training ----------------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.steps = 3000
  c.train.segments_per_speaker = 64  # batch per speaker task per meta-iteration
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.train.log_every = 20
  # Where stdout is no terminal (nohup, SLURM, a pipe): a progress line every this many
  # seconds (fold-run i/n, step, loss, steps/s, ETAs; also in <workdir>/train.log). 0: every
  # step. On a terminal: tqdm bars instead (the log file still gets the lines).
  c.train.report_every_s = 30.0
  c.train.models = ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl')
  # The baselines' own Adam learning rates (MMTL's outer rate is meta.gamma); choose them on
  # dev with experiments/sweep.py, as for MMTL.
  c.train.baseline_lr = ml_collections.ConfigDict({'cnn_lstm': 0.001, 'cnn_lstm_mtl': 0.001})
  c.train.seeds = ()  # several seeds: mean and std over folds x seeds; () = (seed,)
  # A fold directory written under another config: 'error' (stop before any training, listing
  # what changed) or 'restart' (move it aside to <fold>.stale-<n> and train it again).
  c.train.on_changed_config = 'error'

  # ---- meta-test (section 2.4) -------------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.protocols = ('paper', 'strict')
  c.eval.finetune_steps = 5
  # 'steps': finetune_steps minibatches; 'epochs': finetune_steps passes over all of the
  # speaker's segments (configs/reference_finetune.py: 300 Adam epochs, the reference code's).
  c.eval.finetune_unit = 'steps'
  # 'paper' protocol fine-tuning: section 2.4 says "the small learning rate gamma". Plain SGD
  # is the update rule theta was meta-trained for (eq. 4); 'adam' moves every weight by ~lr per
  # step, which on the demo collapsed the shared head that phi reads.
  c.eval.finetune_optimizer = 'sgd'  # 'sgd' | 'adam'
  c.eval.finetune_lr = 0.001  # gamma
  c.eval.batch_size = 256
  return c


__all__ = ['get_config']
