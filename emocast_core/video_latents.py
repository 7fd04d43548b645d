"""A whole video's latents as they travel between tools, and decoding them to frames.

Layout: frames as a batch, `(F, 4, h, w)` with `h, w = H / 8, W / 8` for SD's VAE (the demo VAE: / 16), in
the VAE's own latent space (what the VAE encoder outputs, *not* multiplied by the 0.18215 scaling factor). That is how ComfyUI keeps SD1.5
latents in its `LATENT` dict (`latent_formats.SD15.process_in` scales them only on the way into a model),
so the frames of an EmoCAST video latent decode with ComfyUI's own VAE Decode and the same SD VAE, and
batch-wise latent nodes (upscale, blend, batch slicing) treat the frames as a batch of images. Inside the
pipeline a clip's latents are `(1, 4, F, h, w)` and scaled; `to_video_latents` / `from_video_latents`
convert at the border.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def to_video_latents(clip_latents: torch.Tensor, latent_scale: float) -> torch.Tensor:
    """(1, 4, F, h, w) scaled pipeline latents -> (F, 4, h, w) VAE-space latents."""
    return clip_latents[0].transpose(0, 1) / latent_scale


def from_video_latents(video_latents: torch.Tensor, latent_scale: float) -> torch.Tensor:
    """(F, 4, h, w) VAE-space latents -> (1, 4, F, h, w) scaled pipeline latents."""
    return (video_latents * latent_scale).transpose(0, 1)[None]


def check_video_latents(video_latents, num_frames: int, channels: int, latent_size: Sequence[int],
                        pixels_per_cell: int = 8) -> None:
    """Refuse, with one line, latents that cannot start a video of `num_frames` frames whose latent
    frames are `channels x latent_size` (`pixels_per_cell`: the VAE's downsampling, for the message).
    Frame i of the video starts from latent frame i."""
    if not isinstance(video_latents, torch.Tensor) or video_latents.ndim != 4:
        shape = tuple(video_latents.shape) if isinstance(video_latents, torch.Tensor) else type(video_latents).__name__
        raise ValueError(f"the latent must be a batch of frames (frames, {channels}, h, w), got {shape}; "
                         "use the LATENT output of an EmoCAST sampler")
    frames, got_channels, height, width = video_latents.shape
    want_height, want_width = (int(size) for size in latent_size)
    if got_channels != channels or (height, width) != (want_height, want_width):
        raise ValueError(
            f"the latent's frames are {got_channels}x{height}x{width} but this reference needs {channels}x{want_height}x"
            f"{want_width} ({want_width * pixels_per_cell}x{want_height * pixels_per_cell} pixels); make the latent at the reference's size"
        )
    if frames < num_frames:
        raise ValueError(f"the latent has {frames} frames but the audio needs {num_frames}; "
                         "use a latent made from the same audio span (or a longer one)")


@torch.no_grad()
def decode_video_latents(vae, video_latents: torch.Tensor, frames_per_batch: int = 4, tiled: bool = False) -> torch.Tensor:
    """(F, 4, h, w) VAE-space latents -> CPU float32 frames (F, H, W, 3) in [0, 1].

    vae: a diffusers AutoencoderKL. `frames_per_batch` frames go through the decoder at a time (peak
    memory grows with it); `tiled` decodes each frame in overlapping spatial tiles (diffusers'
    `tiled_decode`), for large frames on small GPUs. The output buffer is allocated once.
    """
    if frames_per_batch < 1:
        raise ValueError(f"frames_per_batch must be at least 1, got {frames_per_batch}")
    if tiled and not hasattr(vae, "tiled_decode"):
        raise ValueError(f"{type(vae).__name__} has no tiled decode; turn tiling off")
    decode = vae.tiled_decode if tiled else vae.decode
    frames = None
    for start in range(0, video_latents.shape[0], frames_per_batch):
        chunk = video_latents[start:start + frames_per_batch].to(vae.device, vae.dtype)
        image = (decode(chunk).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu()
        if frames is None:
            frames = torch.empty((video_latents.shape[0], *image.shape[1:]), dtype=torch.float32)
        frames[start:start + len(image)] = image
    return frames if frames is not None else torch.zeros(0, dtype=torch.float32)
