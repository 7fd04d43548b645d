"""ComfyUI nodes of the EmoCAST pack: thin V3 nodes over `emocast_core` (needs ComfyUI to import)."""
from __future__ import annotations

from .paths import copy_demo_inputs, register_model_folders

register_model_folders()
copy_demo_inputs()

from .comfy_sampling import COMFY_SAMPLING_NODES  # noqa: E402
from .conditioning import CONDITIONING_NODES  # noqa: E402
from .latents import LATENT_NODES  # noqa: E402
from .loaders import LOADER_NODES  # noqa: E402
from .sampler import SAMPLER_NODES  # noqa: E402
from .video import VIDEO_NODES  # noqa: E402

NODES = [*LOADER_NODES, *CONDITIONING_NODES, *SAMPLER_NODES, *COMFY_SAMPLING_NODES, *LATENT_NODES, *VIDEO_NODES]
