"""Loader nodes. They take no tensors, so ComfyUI's cache keeps their outputs (the loaded models) alive
between runs as long as their settings do not change. Models are built on the offload device and
wrapped in `comfy.model_patcher.ModelPatcher`; the nodes that use them call
`comfy.model_management.load_models_gpu` first (`load_to_device`), so ComfyUI's memory manager sees
and moves them. The EmoCAST network is built from ComfyUI's cast layers (`comfy.ops`), so ComfyUI may
load it partially, as it does its own models."""
from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch
from comfy_api.latest import io

from ..emocast_core.checkpoint import load_emocast_net
from ..emocast_core.conditioning.audio import AudioEncoder
from ..emocast_core.conditioning.emotion import EmotionTextEncoder
from ..emocast_core.conditioning.face import FaceAnalyzer
from ..emocast_core.demo.bundle import DemoBundle
from ..emocast_core.demo.face import demo_face_analyzer
from ..emocast_core.demo.text_encoder import MiniLMEmotionEncoder
from ..emocast_core.devices import PRECISION_CHOICES, pick_dtype
from ..emocast_core.loading import checkpoint_config, load_vae
from ..emocast_core.model_files import is_tokenizer_folder, tokenizer_candidates
from . import paths
from .comfy_audio_encoder import ComfyAudioEncoderAdapter
from .comfy_vae import ComfyVAEAdapter
from .types import (
    AudioEncoderType,
    EmoCASTModel,
    FaceAnalyzerType,
    LoadedAudioEncoder,
    LoadedEmoCAST,
    LoadedTextEncoder,
    TextEncoder,
)

CATEGORY = "EmoCAST/loaders"
CLIP_L_WIDTH = 768  # the text-token width EmoCAST's cross-attention was trained on
PRECISIONS = list(PRECISION_CHOICES)


class ModuleHolder(torch.nn.Module):
    """Gives any `nn.Module` the writable ``device`` attribute `ModelPatcher` sets on the model it
    manages (diffusers and transformers models expose ``device`` as a read-only property).

    The patcher sets it to where the model computes after every load and unload. A module that can
    compute with some of its weights elsewhere (`EmoCASTNet` under a partial load) learns it through its
    `set_execution_device`; the others compute where their weights are."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, device: torch.device) -> None:
        self._device = device
        if hasattr(self.inner, "set_execution_device"):
            self.inner.set_execution_device(device)


def make_patcher(module: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
    module.to(offload_device)
    return comfy.model_patcher.ModelPatcher(ModuleHolder(module, offload_device), load_device, offload_device)


def casts_own_weights(model: torch.nn.Module) -> bool:
    """Whether every layer of `model` that holds weights is a ComfyUI cast layer (`comfy.ops`), which can
    fetch its weights from the offload device as it runs: the condition for a partial load to work."""
    return all(
        hasattr(module, "comfy_cast_weights")
        for module in model.modules()
        if next(module.parameters(recurse=False), None) is not None
    )


def load_to_device(*patchers) -> None:
    """Let ComfyUI place the models for the next computation.

    Models made of ComfyUI's cast layers (the EmoCAST network, ComfyUI's own VAE) are loaded together
    and may be loaded partially when memory is short (`--lowvram`, `--novram`, or a GPU full of other
    models): the layers left on the offload device bring their weights along as they run. The
    transformers and diffusers encoders are plain torch layers, which cannot compute with weights left
    behind, so they are loaded whole, and after the others: loading them may push a cast-layer model
    out (which it survives), never the other way round."""
    partial_ok = [patcher for patcher in patchers if casts_own_weights(patcher.model)]
    whole = [patcher for patcher in patchers if patcher not in partial_ok]
    if partial_ok:
        mm.load_models_gpu(partial_ok)
    if whole:
        mm.load_models_gpu(whole, force_full_load=True)


class EmoCASTModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTModelLoader",
            display_name="EmoCAST Model Loader",
            category=CATEGORY,
            description="Loads the EmoCAST network (net.pth / .safetensors from models/emocast) and its SD VAE "
                        "(a diffusers folder, or ComfyUI's VAE connected to vae_model).",
            inputs=[
                io.Combo.Input("checkpoint", options=paths.CHECKPOINT.choices(),
                               tooltip="EmoCAST weights in models/emocast (.safetensors or .pth). An architecture "
                                       "file <name>.json or config.json beside it is used when present."),
                io.Combo.Input("vae", options=paths.VAE.choices(),
                               tooltip="The sd-vae-ft-mse VAE as a diffusers folder in models/vae or models/emocast. "
                                       "Ignored when a VAE is connected to vae_model."),
                io.Combo.Input("precision", options=PRECISIONS, default="auto",
                               tooltip="Weight dtype. auto: fp16/bf16 on GPUs that support it, fp32 on the CPU."),
                io.Vae.Input("vae_model", optional=True,
                             tooltip="Optional: ComfyUI's VAE, e.g. Load VAE with vae-ft-mse-840000-ema-pruned.safetensors "
                                     "(or a SD1.5 checkpoint's VAE). Used instead of the vae folder, with ComfyUI's own "
                                     "memory management and tiled fallback."),
            ],
            outputs=[EmoCASTModel.Output(display_name="model",
                                         tooltip="The EmoCAST network and its VAE: connect to EmoCAST Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint=None):
        # ComfyUI files the returned line under every input this function takes, so it takes only the main
        # model input: a bad checkpoint is one error, under `checkpoint`. A vae that is not listed is refused
        # by execute() before anything is read (ComfyUI 0.3.64 does not check a V3 combo against its options
        # when queueing; later versions do, each under its own input).
        return paths.check_choices((paths.CHECKPOINT, checkpoint))

    @classmethod
    def execute(cls, checkpoint, vae, precision, vae_model=None) -> io.NodeOutput:
        # Again here, before anything is read: execute() can be called without validation.
        demo = DemoBundle()
        checkpoint_path = demo.net if checkpoint == paths.DEMO_CHOICE else paths.CHECKPOINT.resolve(checkpoint)
        comfy_vae = cls._adapt(vae_model) if vae_model is not None else None
        vae_dir = None if comfy_vae is not None else demo.vae_dir if vae == paths.DEMO_CHOICE else paths.VAE.resolve(vae)
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        # auto: what ComfyUI's memory manager picks for a model of this size on this GPU.
        auto_dtype = mm.unet_dtype(device=load_device, model_params=checkpoint_path.stat().st_size // 2,
                                   supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
        dtype = pick_dtype(precision, load_device, auto=auto_dtype)
        # Architecture: stored in the file, else <name>.json / config.json / unet_config.json beside it, else SD1.5.
        config = checkpoint_config(checkpoint_path)
        # ComfyUI's layers, picked as for its own models (weights stored in the dtype they compute in), so
        # that its memory manager can load the network partially.
        operations = comfy.ops.pick_operations(dtype, dtype, load_device=load_device)
        net = load_emocast_net(checkpoint_path, config, device=offload_device, dtype=dtype, operations=operations)
        if comfy_vae is not None:
            vae_used, vae_patcher = comfy_vae, comfy_vae.patcher
        else:
            vae_device = mm.vae_device()
            # As ComfyUI does for SD VAEs: bf16 where supported, else fp32 (fp16 SD VAEs can overflow to NaN).
            vae_dtype = pick_dtype(precision, vae_device, auto=mm.vae_dtype(vae_device, [torch.bfloat16]))
            vae_used = load_vae(vae_dir, device=mm.vae_offload_device(), dtype=vae_dtype)
            vae_patcher = make_patcher(vae_used, vae_device, mm.vae_offload_device())
        return io.NodeOutput(LoadedEmoCAST(
            net_patcher=make_patcher(net, load_device, offload_device),
            vae=vae_used,
            vae_patcher=vae_patcher,
            checkpoint_name=checkpoint,
            dtype=dtype,
        ))

    @staticmethod
    def _adapt(vae_model) -> ComfyVAEAdapter:
        try:
            return ComfyVAEAdapter(vae_model)
        except ValueError as error:
            raise ValueError(f"EmoCAST Model Loader: vae_model: {error}") from None


class EmoCASTTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTTextEncoderLoader",
            display_name="EmoCAST Emotion Text Encoder Loader",
            category=CATEGORY,
            description="Loads the CLIP ViT-L/14 text encoder that turns emotion text into EmoCAST conditioning.",
            inputs=[
                io.Combo.Input("text_encoder", options=paths.TEXT_ENCODER.choices(),
                               tooltip="clip_l.safetensors from models/text_encoders, or a Hugging Face "
                                       "clip-vit-large-patch14 folder."),
                io.Combo.Input("tokenizer", options=paths.TOKENIZER.choices(), default="auto",
                               tooltip="auto: a tokenizer folder beside the encoder (<name>_tokenizer/ or tokenizer/), "
                                       "else the CLIP tokenizer that ships with ComfyUI (comfy/sd1_tokenizer)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional: ComfyUI's CLIP, e.g. Load CLIP with clip_l.safetensors (type "
                                      "stable_diffusion) or a SD1.5 checkpoint's CLIP. Its CLIP-L weights are used "
                                      "instead of the text_encoder file, run as EmoCAST was trained (see docs)."),
            ],
            outputs=[TextEncoder.Output(display_name="text_encoder",
                                        tooltip="The emotion text encoder: connect to EmoCAST Emotion Encode.")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder=None):
        # The main model input only (see EmoCASTModelLoader.validate_inputs); execute() checks the tokenizer.
        # Links are not known here, so with a clip connected text_encoder must still be a listed entry.
        return paths.check_choices((paths.TEXT_ENCODER, text_encoder))

    @classmethod
    def execute(cls, text_encoder, tokenizer, clip=None) -> io.NodeOutput:
        load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
        dtype = mm.text_encoder_dtype(load_device)
        if clip is not None:
            encoder = cls._from_comfy_clip(clip, tokenizer, offload_device, dtype)
            return io.NodeOutput(LoadedTextEncoder(encoder, make_patcher(encoder.text_model, load_device, offload_device)))
        path = None if text_encoder == paths.DEMO_CHOICE else paths.TEXT_ENCODER.resolve(text_encoder)
        tokenizer_dir = None if paths.TOKENIZER.is_builtin(tokenizer) else paths.TOKENIZER.resolve(tokenizer)
        if path is None:
            encoder = MiniLMEmotionEncoder.from_pretrained(device=offload_device, dtype=dtype)
            return io.NodeOutput(LoadedTextEncoder(encoder, make_patcher(encoder.text_model, load_device, offload_device)))
        if tokenizer == "auto":
            tokenizer_dir = _tokenizer_beside(path) or paths.comfy_sd1_tokenizer()
        elif tokenizer == "comfyui sd1_tokenizer":
            tokenizer_dir = paths.comfy_sd1_tokenizer()
        encoder = EmotionTextEncoder.from_pretrained(path, tokenizer_dir, device=offload_device, dtype=dtype)
        return io.NodeOutput(LoadedTextEncoder(encoder, make_patcher(encoder.text_model, load_device, offload_device)))

    @staticmethod
    def _from_comfy_clip(clip, tokenizer: str, device: torch.device, dtype: torch.dtype) -> EmotionTextEncoder:
        """The CLIP-L text tower of ComfyUI's CLIP, run by transformers as upstream runs it. ComfyUI's own
        encode does not mask the padding of SD1.5 prompts, while EmoCAST was conditioned with the padding
        masked; most of the 77 positions it reads are padding, so they would differ (see docs/comfyui.md)."""
        tokenizer_dir = paths.comfy_sd1_tokenizer() if paths.TOKENIZER.is_builtin(tokenizer) else paths.TOKENIZER.resolve(tokenizer)
        try:
            encoder = EmotionTextEncoder.from_state_dict(clip.get_sd(), tokenizer_dir, device=device, dtype=dtype,
                                                         source="the connected CLIP")
        except ValueError as error:
            raise ValueError(f"EmoCAST Emotion Text Encoder Loader: clip: {error}") from None
        if encoder.hidden_size != CLIP_L_WIDTH:
            raise ValueError(f"EmoCAST Emotion Text Encoder Loader: clip: its text tower is {encoder.hidden_size} wide; "
                             f"EmoCAST needs CLIP ViT-L/14 ({CLIP_L_WIDTH}): Load CLIP with clip_l.safetensors, "
                             "type stable_diffusion")
        return encoder


def _tokenizer_beside(path: Path) -> Path | None:
    """The core's tokenizer search, taking only folders inside the text encoders' model folders."""
    for candidate in tokenizer_candidates(path):
        if paths.is_contained(candidate, paths.TEXT_ENCODER.keys) and is_tokenizer_folder(candidate):
            return candidate
    return None


class EmoCASTAudioEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTAudioEncoderLoader",
            display_name="EmoCAST Audio Encoder Loader",
            category=CATEGORY,
            description="Loads wav2vec2-base-960h (a Hugging Face folder) for the speech features.",
            inputs=[
                io.Combo.Input("wav2vec2", options=paths.AUDIO_ENCODER.choices(),
                               tooltip="wav2vec2-base-960h folder (config.json, model.safetensors, "
                                       "preprocessor_config.json) in models/audio_encoders or models/emocast."),
                io.Combo.Input("precision", options=["auto", "fp32", "fp16"], default="auto",
                               tooltip="auto: the dtype ComfyUI picks for text encoders on this device (fp32 on the CPU)."),
                io.Combo.Input("vocal_separator", options=paths.VOCAL_SEPARATOR.choices(), default=paths.NONE_CHOICE,
                               tooltip="Optional MDX-Net model (e.g. models/emocast/audio_separator/Kim_Vocal_2.onnx) "
                                       "that isolates the voice before feature extraction, as upstream does."),
                io.AudioEncoder.Input("comfy_audio_encoder", optional=True,
                                      tooltip="Optional: ComfyUI's audio encoder (Load Audio Encoder with a wav2vec2-base "
                                              "file), used instead of the wav2vec2 folder. Not upstream's numbers: it "
                                              "interpolates after the transformer (see docs)."),
            ],
            outputs=[AudioEncoderType.Output(display_name="audio_encoder",
                                             tooltip="wav2vec2 (and the vocal separator, if any): connect to "
                                                     "EmoCAST Audio Features.")],
        )

    @classmethod
    def validate_inputs(cls, wav2vec2=None):
        # The main model input only (see EmoCASTModelLoader.validate_inputs); execute() checks vocal_separator.
        return paths.check_choices((paths.AUDIO_ENCODER, wav2vec2))

    @classmethod
    def execute(cls, wav2vec2, precision, vocal_separator=paths.NONE_CHOICE, comfy_audio_encoder=None) -> io.NodeOutput:
        separator_path = None if vocal_separator == paths.NONE_CHOICE else paths.VOCAL_SEPARATOR.resolve(vocal_separator)
        if comfy_audio_encoder is not None:
            try:
                encoder = ComfyAudioEncoderAdapter(comfy_audio_encoder)
            except ValueError as error:
                raise ValueError(f"EmoCAST Audio Encoder Loader: comfy_audio_encoder: {error}") from None
            patcher = encoder.patcher
        else:
            folder = DemoBundle().wav2vec_dir if wav2vec2 == paths.DEMO_CHOICE else paths.AUDIO_ENCODER.resolve(wav2vec2)
            load_device, offload_device = mm.text_encoder_device(), mm.text_encoder_offload_device()
            dtype = pick_dtype(precision, load_device, auto=mm.text_encoder_dtype(load_device))
            encoder = AudioEncoder.from_pretrained(folder, device=offload_device, dtype=dtype)
            patcher = make_patcher(encoder.wav2vec2, load_device, offload_device)
        separator = None
        if separator_path is not None:
            from ..emocast_core.conditioning.vocal_separation import VocalSeparator

            separator = VocalSeparator(separator_path, providers=onnx_providers("auto"))
        return io.NodeOutput(LoadedAudioEncoder(encoder, patcher, separator))


def onnx_providers(choice: str) -> list[str]:
    """onnxruntime providers: CUDA when ComfyUI runs on CUDA and onnxruntime has it, else the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wants_cuda = choice == "cuda" or (choice == "auto" and mm.get_torch_device().type == "cuda")
    if wants_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if choice == "cuda":
        raise RuntimeError(f"onnxruntime has no CUDAExecutionProvider here (available: {available}); "
                           "install onnxruntime-gpu or choose cpu")
    return ["CPUExecutionProvider"]


class EmoCASTFaceAnalyzerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTFaceAnalyzerLoader",
            display_name="EmoCAST Face Analyzer Loader",
            category=CATEGORY,
            description="Loads the InsightFace antelopev2 ONNX models (detector, ArcFace, landmarks).",
            inputs=[
                io.Combo.Input("face_models", options=paths.FACE_MODELS.choices(),
                               tooltip="Folder with scrfd_10g_bnkps.onnx, glintr100.onnx and 2d106det.onnx "
                                       "(models/insightface/models/antelopev2 or models/emocast/face_analysis/models)."),
                io.Combo.Input("onnx_device", options=["auto", "cpu", "cuda"], default="auto",
                               tooltip="Where onnxruntime runs the face models. auto: CUDA when available, else CPU."),
            ],
            outputs=[FaceAnalyzerType.Output(display_name="face_analyzer",
                                             tooltip="The face detector and identity models: connect to EmoCAST "
                                                     "Reference Encoder.")],
        )

    @classmethod
    def validate_inputs(cls, face_models=None):
        return paths.check_choices((paths.FACE_MODELS, face_models))

    @classmethod
    def execute(cls, face_models, onnx_device) -> io.NodeOutput:
        if face_models == paths.DEMO_CHOICE:
            # The demo portraits are drawn: a colour-based analyser, no model files.
            return io.NodeOutput(demo_face_analyzer())
        folder = paths.FACE_MODELS.resolve(face_models)
        return io.NodeOutput(FaceAnalyzer.from_folder(folder, providers=onnx_providers(onnx_device)))


LOADER_NODES = [EmoCASTModelLoader, EmoCASTTextEncoderLoader, EmoCASTAudioEncoderLoader, EmoCASTFaceAnalyzerLoader]
