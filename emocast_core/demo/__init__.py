"""The embedded demo model: a small EmoCAST trained on synthetic talking faces.

This is a SYNTHETIC DEMO MODEL, not the released EmoCAST weights. It animates procedurally drawn
faces at 128 x 128 pixels, and exists so that `python -m emocast_core generate --demo` makes a real
video on a fresh machine with nothing to download (see docs/demo-model.md).

Everything the demo needs when it generates is here: `bundle.DemoBundle` finds the files in
`assets/` (network, VAE, wav2vec2, the sample portrait and speech) and `bundle.load_demo_models`
loads them as the same `EmoCASTModels` that `loading.load_models` gives for the released weights;
`face` and `drawn_faces` find faces without model files; `text_encoder` is the MiniLM emotion
encoder. Drawing the faces, training the model and writing the bundle belong to the research
package (`emocast_research.synthetic`), which the runtime never imports.
"""
