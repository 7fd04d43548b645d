"""Video nodes: MP4 out (H.264 + AAC) and pasting the generated face crop back into the portrait."""
from __future__ import annotations

import json
import os

import folder_paths
import torch
from comfy.cli_args import args as comfy_args
from comfy_api.latest import InputImpl, io, ui

from ..emocast_core.conditioning.crop import paste_back
from ..emocast_core.video import write_video
from . import paths
from .types import Reference

CATEGORY = "EmoCAST/video"


class EmoCASTVideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTVideoCombine",
            display_name="EmoCAST Video Combine",
            category=CATEGORY,
            description="Writes the frames and the speech to an MP4 (H.264 + AAC) in ComfyUI's output folder. "
                        "The audio is trimmed or padded to the video length. Like ComfyUI's Save Video, the file "
                        "carries the workflow: drop it on ComfyUI to get the graph back.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames [T, H, W, 3] (e.g. from EmoCAST Sampler)."),
                # The editor rounds to as many decimals as the step has: 0.001 lets 23.976 or 29.97 be typed.
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.001,
                               tooltip="Frame rate, e.g. 25 or 23.976; use the fps output of EmoCAST Audio Features "
                                       "or the sampler."),
                io.String.Input("filename_prefix", default="EmoCAST/emocast",
                                tooltip="File name prefix inside the output folder (may contain a subfolder, e.g. "
                                        "EmoCAST/emocast; no absolute path or '..')."),
                io.Int.Input("crf", default=19, min=0, max=51,
                             tooltip="H.264 quality: lower is better and bigger (17-23 is typical)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Sound track, e.g. the audio output of EmoCAST Audio Features (the exact span used)."),
            ],
            outputs=[io.Video.Output(display_name="video",
                                     tooltip="The written MP4 as a native VIDEO, for any node that takes one.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def _workflow_tags(cls) -> dict[str, str]:
        """The tags ComfyUI's own Save Video writes: ``prompt`` and each extra_pnginfo entry (``workflow``), as JSON."""
        if comfy_args.disable_metadata:
            return {}
        tags = {}
        if cls.hidden.extra_pnginfo is not None:
            tags.update({key: json.dumps(value) for key, value in cls.hidden.extra_pnginfo.items()})
        if cls.hidden.prompt is not None:
            tags["prompt"] = json.dumps(cls.hidden.prompt)
        return tags

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        # Before the run, so a prefix that would leave the output folder is refused before any sampling.
        # None: the prefix comes through a link and is checked when the node runs.
        return True if filename_prefix is None else (paths.output_prefix_problem(filename_prefix) or True)

    @classmethod
    def execute(cls, images, fps, filename_prefix, crf, audio=None) -> io.NodeOutput:
        problem = paths.output_prefix_problem(filename_prefix)
        if problem:
            raise ValueError(problem)
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"EmoCAST Video Combine: expected frames [T, H, W, C], got {tuple(images.shape)}")
        height, width = int(images.shape[1]), int(images.shape[2])
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        file = f"{filename}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        # The writer only creates `path` once the file is complete (a partial file never appears there).
        write_video(path, images[..., :3], fps, audio=audio, crf=crf, metadata=cls._workflow_tags())
        return io.NodeOutput(
            InputImpl.VideoFromFile(path),
            ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]),
        )


class EmoCASTPasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTPasteBack",
            display_name="EmoCAST Paste Back",
            category=CATEGORY,
            description="Blends the generated face-crop frames back into the full-size portrait.",
            inputs=[
                io.Image.Input("images", tooltip="Generated frames (the face crop)."),
                Reference.Input("reference", tooltip="The EmoCAST Reference Encoder output the frames were made from."),
                io.Float.Input("feather", default=0.1, min=0.0, max=0.5, step=0.01,
                               tooltip="Width of the soft blend at the crop border, as a fraction of the crop side."),
            ],
            outputs=[io.Image.Output(display_name="images",
                                     tooltip="The frames at the full portrait's size, the face blended in.")],
        )

    @classmethod
    def execute(cls, images, reference, feather) -> io.NodeOutput:
        source = torch.from_numpy(reference.source_image).float()
        if reference.crop is None:
            # The whole image was resized to the model size: resize the frames back.
            height, width = source.shape[:2]
            resized = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2)[:, :3].float(), size=(height, width),
                                                      mode="bicubic", align_corners=False)
            return io.NodeOutput(resized.clamp(0, 1).permute(0, 2, 3, 1).contiguous())
        return io.NodeOutput(paste_back(images[..., :3].float().cpu(), reference.crop, reference.source_image, feather))


VIDEO_NODES = [EmoCASTVideoCombine, EmoCASTPasteBack]
