"""EmoCAST (emotional talking portraits) — a ComfyUI-free core library."""

__version__ = "0.1.0"
