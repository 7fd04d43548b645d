"""EmoCAST research tools, kept apart from the runtime (`emocast_core`).

* `evaluation`: the field's metrics on generated videos (Sync-C/D, FID, FVD, identity, emotion,
  seams, mouth-audio correlation); `python -m emocast_research evaluate`.
* `synthetic`: procedurally drawn talking faces with espeak-ng speech, the learning benchmark
  that trains the embedded demo model on them, its metrics, and writing the demo bundle;
  `python -m emocast_research demo-model`.

This package uses the runtime (pipeline, dataset builder, trainer); the runtime and the ComfyUI
nodes never import this package, so generating videos works without it.
"""
