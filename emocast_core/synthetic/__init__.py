"""Synthetic talking faces for proving that EmoCAST learns, and for the embedded demo model.

Modules: `faces` (identities, emotions, drawing), `speech` (espeak-ng speech, mouth opening),
`captions` (emotive descriptions), `corpus` (videos + labels + ground truth), `analysis` (face
analysis for the drawn faces), `models` (network shape, random wav2vec2, tiny VAE), `training`
(the project's dataset builder and trainer set up for the corpus), `evaluation` (the learning
metrics), `benchmark` (the resumable benchmark steps).
"""
