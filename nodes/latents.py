"""EmoCAST Decode: a video LATENT (frames as a batch, see `emocast_core.video_latents`) -> IMAGE frames."""
from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from ..emocast_core.video_latents import decode_video_latents
from .loaders import load_to_device
from .types import EmoCASTModel


class EmoCASTDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTDecode",
            display_name="EmoCAST Decode",
            category="EmoCAST/latent",
            description="Decodes a video latent (e.g. the sampler's LATENT, after latent nodes) into frames with "
                        "the EmoCAST model's VAE, a few frames at a time; tiles save more memory on large frames.",
            inputs=[
                EmoCASTModel.Input("model", tooltip="From EmoCAST Model Loader: its VAE decodes."),
                io.Latent.Input("latent", tooltip="A video latent, frames as a batch (the EmoCAST sampler's LATENT)."),
                io.Int.Input("frames_per_batch", default=4, min=1, max=256,
                             tooltip="Frames decoded at once. Lower uses less VRAM; higher is faster."),
                io.Boolean.Input("tiled", default=False,
                                 tooltip="Decode each frame in overlapping tiles: far less VRAM for large frames, "
                                         "a little slower; seams are blended."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The decoded frames [T, H, W, 3].")],
        )

    @classmethod
    def execute(cls, model, latent, frames_per_batch, tiled) -> io.NodeOutput:
        samples = latent["samples"]
        channels = model.vae.config.latent_channels
        if samples.ndim != 4 or samples.shape[1] != channels:
            raise ValueError(f"the latent must be frames as a batch (frames, {channels}, h, w), got "
                             f"{tuple(samples.shape)}; use the LATENT of an EmoCAST sampler")
        load_to_device(model.vae_patcher)
        frames = decode_video_latents(model.vae, samples, frames_per_batch, tiled)
        return io.NodeOutput(frames.to(mm.intermediate_device()))


LATENT_NODES = [EmoCASTDecode]
