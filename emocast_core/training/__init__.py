"""EmoCAST training: dataset builder, emotion-aware sampling, progressive functional training.

Modules (one job each):

* `captions` — emotion labels (label files, MEAD folders) and emotive descriptions;
* `dataset_builder`, `video_frames`, `union_masks`, `shards` — videos -> index.jsonl + shards;
* `dataset`, `sampler` — training samples; emotion-aware clip sampling and reference choice;
* `config` — the YAML/JSON training config;
* `stages` — what each progressive stage trains; `initialization` — where weights start;
* `objectives`, `dropout`, `model` — noise, loss and condition dropout around the network;
* `trainer`, `ema`, `checkpoints`, `validation` — the accelerate training loop and its outputs;
* `cli` — the `dataset` and `train` commands.

Heavy imports (accelerate, diffusers' VAE, video decoding) happen in the modules that need them.
"""
