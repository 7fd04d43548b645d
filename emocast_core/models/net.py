"""`EmoCASTNet`: the container whose state dict is the released `net.pth`."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import EmoCASTConfig
from .layers import DEFAULT_OPERATIONS, Operations
from .projections import AudioProjModel, FaceLocator, ImageProjModel
from .unet import DenoisingUNet, ReferenceUNet


class EmoCASTNet(nn.Module):
    """All learned weights of EmoCAST, under the released top-level names.

    operations: what the weight-holding layers are built from (`torch.nn`, or a host's namespace
    with the same constructors such as ComfyUI's `comfy.ops.disable_weight_init`; see `layers.py`).
    """

    def __init__(self, config: EmoCASTConfig, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        self.config = config
        unet = config.unet
        self.reference_unet = ReferenceUNet(config, operations)
        self.denoising_unet = DenoisingUNet(config, operations)
        self.face_locator = FaceLocator(
            unet.block_out_channels[0], config.face_locator_conditioning_channels, config.face_locator_block_out_channels,
            operations,
        )
        self.imageproj = ImageProjModel(unet.cross_attention_dim, config.face_embedding_dim, config.num_face_tokens, operations)
        self.audioproj = AudioProjModel(
            config.audio_window,
            config.audio_layers,
            config.audio_channels,
            config.audio_intermediate_dim,
            config.audio.audio_token_dim,
            config.num_audio_tokens,
            operations,
        )

    def set_execution_device(self, device: Optional[torch.device]) -> None:
        """Tell both UNets where to compute when the weights are not all there (a host's partial
        load); None: where the weights are."""
        self.reference_unet.execution_device = device
        self.denoising_unet.execution_device = device

    @classmethod
    def build(
        cls,
        config: EmoCASTConfig,
        device: Optional[torch.device | str] = None,
        dtype: Optional[torch.dtype] = None,
        operations: Operations = DEFAULT_OPERATIONS,
    ) -> "EmoCASTNet":
        """Build without spending time on random initialisation when weights will be loaded.

        On `device="meta"` nothing is allocated (the shape-only model, e.g. for key checks). On
        other devices the parameters are allocated uninitialised (`torch.empty`) after a meta build,
        so a 2.5 B-parameter model costs one allocation and no random-number generation.
        """
        with torch.device("meta"):
            net = cls(config, operations)
        if str(device) == "meta":
            return net if dtype is None else net.to(dtype)
        net = net.to_empty(device=device or "cpu")
        # Buffers are not in the "weights to load" sense free to leave empty: the motion modules'
        # position tables are recomputed, then overwritten by any checkpoint that stores them.
        fresh_buffers = {}
        for name, module in net.named_modules():
            if hasattr(module, "pe") and name.endswith("pos_encoder"):
                fresh_buffers[name] = module
        for module in fresh_buffers.values():
            table = type(module)(module.pe.shape[2], module.pe.shape[1]).pe
            module.pe.copy_(table)
        return net if dtype is None else net.to(dtype)
