"""The embedded demo model: a small EmoCAST trained on synthetic talking faces.

This is a SYNTHETIC DEMO MODEL, not the released EmoCAST weights. It animates the drawn faces of
`emocast_core.synthetic` at 64 x 64 pixels, and exists so that `python -m emocast_core generate
--demo` makes a real video on a fresh machine with nothing to download (see docs/demo-model.md).

`bundle.DemoBundle` finds the files in `assets/`; `bundle.load_demo_models` loads them as the same
`EmoCASTModels` that `loading.load_models` gives for the released weights.
"""
