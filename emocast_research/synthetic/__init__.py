"""Synthetic talking faces for proving that EmoCAST learns, and for building the embedded demo model.

Modules: `faces` (identities, emotions, drawing), `speech` (espeak-ng speech, mouth opening),
`captions` (emotive descriptions), `corpus` (videos + labels + ground truth), `models` (network
shape, random wav2vec2, tiny VAE), `training` (the project's dataset builder and trainer set up for
the corpus), `evaluation` (the learning metrics), `demo_bundle` (writing `emocast_core/demo/assets/`),
`benchmark` (the resumable benchmark steps) and `cli` (`python -m emocast_research demo-model`).
The face analysis for drawn faces is part of the runtime (`emocast_core.demo.drawn_faces`): the
demo model uses it when it generates.
"""
