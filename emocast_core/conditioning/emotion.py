"""Emotion-text conditioning: the CLIP ViT-L/14 text encoder and emotion embeddings.

EmoCAST conditions both UNets on the CLIP ViT-L/14 ``last_hidden_state`` of an emotive prompt
(77 tokens x 768). This module encodes prompts exactly as the released pipeline does:

* ``tokenizer(prompt, padding="max_length", max_length=77, truncation=True)``;
* ``text_model(input_ids=..., attention_mask=...)`` — the released pipeline passes the attention
  mask too, unlike the usual Stable Diffusion pipelines, and that changes the hidden states at the
  padded positions;
* the unconditional embedding is the empty prompt ``""`` encoded the same way.

Deliberate difference: the released pipeline does not truncate, so a prompt longer than 77 tokens
crashes there; here it is truncated to 77 tokens with a ``PromptTruncationWarning``.

On top of the encoder: ``emotion_embedding`` (presets and an intensity that interpolates from the
neutral prompt in embedding space), ``keyframe_embeddings`` (one embedding per keyframe),
``frame_embeddings`` (those blended per video frame) and ``schedule_embeddings`` (both in one call; the
text format and timing are in ``emotion_schedule``). The command line, the Python API and the ComfyUI
nodes all blend through these.

The encoder loads offline from a Hugging Face folder or a single ``clip_l.safetensors`` file (the
ComfyUI ``models/text_encoders`` layout); see ``EmotionTextEncoder.from_pretrained``.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..model_files import is_tokenizer_folder, tokenizer_candidates
from .emotion_presets import (
    EMOTION_PRESET_ALTERNATIVES,
    EMOTION_PRESETS,
    MAX_EMOTION_INTENSITY,
    check_emotion_intensity,
    resolve_prompt,
)
from .emotion_schedule import (
    EmotionKeyframe,
    EmotionScheduleError,
    TransitionAlign,
    keyframe_blend_weights,
    parse_emotion_schedule,
)

__all__ = [
    "EMOTION_PRESETS",
    "EMOTION_PRESET_ALTERNATIVES",
    "MAX_EMOTION_INTENSITY",
    "EmotionKeyframe",
    "EmotionScheduleError",
    "EmotionTextEncoder",
    "PromptTruncationWarning",
    "blend_emotion",
    "check_emotion_intensity",
    "emotion_embedding",
    "frame_embeddings",
    "keyframe_embeddings",
    "parse_emotion_schedule",
    "resolve_prompt",
    "schedule_embeddings",
]

NEUTRAL_PRESET = "neutral"

# Architecture of openai/clip-vit-large-patch14's text tower. Shapes in a single-file checkpoint
# override the sizes (so reduced test models load too); these fill in what shapes cannot tell.
CLIP_L_TEXT_CONFIG: Mapping[str, object] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}
CLIP_HEAD_DIM = 64  # every OpenAI CLIP text tower uses 64-wide attention heads

# Where the text tower sits inside known single-file checkpoints, most specific first. Any other
# prefix in front of "embeddings.token_embedding.weight" is detected too; this list only breaks ties.
KNOWN_SINGLE_FILE_PREFIXES = (
    "",  # ComfyUI models/text_encoders/clip_l.safetensors: text_model.* (+ text_projection, logit_scale)
    "clip_l.transformer.",  # ComfyUI-saved CLIP / checkpoints of SD3- and Flux-style models
    "text_encoders.clip_l.transformer.",  # SD3 all-in-one checkpoints
    "cond_stage_model.transformer.",  # SD1.x all-in-one checkpoints (with or without "text_model.")
    "conditioner.embedders.0.transformer.",  # SDXL all-in-one checkpoints
)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TEXT_TOWER_GROUPS = ("embeddings.", "encoder.", "final_layer_norm.")
_TOKEN_EMBEDDING_KEY = "embeddings.token_embedding.weight"


class PromptTruncationWarning(UserWarning):
    """A prompt was longer than the text encoder's 77 tokens and was cut."""


class TextModelEncoder:
    """What every emotion-text encoder shares, given a ``text_model`` attribute (a transformers
    model whose parameters set device and dtype) and an ``encode(prompts) -> (B, L, D)`` method:
    the demo's MiniLM encoder (`demo.text_encoder`) reuses it with another tokenizer and model."""

    text_model: torch.nn.Module

    @property
    def hidden_size(self) -> int:
        """Width D of the embeddings (768 for CLIP ViT-L/14)."""
        return int(self.text_model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.text_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.text_model.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move the text model in place; returns self."""
        self.text_model.to(device=device, dtype=dtype)
        return self

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def unconditional(self) -> torch.Tensor:
        """The classifier-free-guidance text embedding: the empty prompt, (1, 77, D)."""
        return self.encode([""])

    def encode_each(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Encode every distinct prompt once, one prompt per call.

        One prompt per call keeps each embedding bit-identical to ``encode([prompt])``, whatever
        else is being encoded (batched matrix products may round differently per batch size).

        Returns:
            prompt -> (1, 77, D) embedding.
        """
        return {prompt: self.encode([prompt]) for prompt in dict.fromkeys(prompts)}


@dataclass
class EmotionTextEncoder(TextModelEncoder):
    """A CLIP tokenizer and text model that encode prompts the way EmoCAST was conditioned.

    Attributes:
        tokenizer: CLIP BPE tokenizer (its ``pad_token`` must be set; CLIP-L pads with ``<|endoftext|>``).
        text_model: ``transformers.CLIPTextModel`` in eval mode; its parameters set device and dtype.
    """

    tokenizer: CLIPTokenizer
    text_model: CLIPTextModel

    def __post_init__(self) -> None:
        if self.tokenizer.pad_token is None:
            raise ValueError("the CLIP tokenizer has no pad_token; CLIP ViT-L/14 pads with '<|endoftext|>'")
        if len(self.tokenizer) > self.text_model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the text model only "
                f"{self.text_model.config.vocab_size}: tokenizer and text encoder do not belong together"
            )
        self.text_model.eval().requires_grad_(False)

    @property
    def max_length(self) -> int:
        """Token positions per prompt (77 for CLIP ViT-L/14); every prompt is padded to this.

        Taken from the model, not the tokenizer: tokenizer folders disagree (ComfyUI's bundled
        SD1 tokenizer says 8192).
        """
        return int(self.text_model.config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        tokenizer_path: str | Path | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        num_attention_heads: int | None = None,
    ) -> "EmotionTextEncoder":
        """Load offline (``local_files_only``) from a Hugging Face folder or a single .safetensors file.

        Args:
            path: one of
                * a Hugging Face ``CLIPTextModel`` folder (``config.json`` + ``model.safetensors`` or
                  ``pytorch_model.bin``), e.g. ``openai/clip-vit-large-patch14`` or the
                  ``text_encoder/`` of a Stable Diffusion 1.5 folder;
                * a Stable Diffusion folder holding ``text_encoder/`` and ``tokenizer/``;
                * a single ``.safetensors`` file with the CLIP-L text tower (``clip_l.safetensors``
                  from ComfyUI's ``models/text_encoders``, or an all-in-one checkpoint; see
                  ``KNOWN_SINGLE_FILE_PREFIXES``).
            tokenizer_path: folder with ``vocab.json`` + ``merges.txt`` or ``tokenizer.json``. When
                omitted it is searched in ``path``, ``path/tokenizer`` and ``path/../tokenizer``
                (for a single file ``clip_l.safetensors``: ``clip_l_tokenizer/`` or ``tokenizer/``
                beside it; see ``model_files.tokenizer_candidates``). ComfyUI ships the CLIP-L
                tokenizer as ``comfy/sd1_tokenizer``.
            device: where the text model runs (default CPU).
            dtype: parameter dtype (default float32).
            num_attention_heads: single-file only; head count, which tensor shapes cannot reveal.
                Default: hidden size / 64, as in every OpenAI CLIP text tower.

        Raises:
            FileNotFoundError: naming every missing file and where it should go.
        """
        path = Path(path).expanduser()
        single_file = path.suffix == ".safetensors" or path.is_file()
        if single_file:
            if path.suffix != ".safetensors":
                raise ValueError(f"{path}: a single-file text encoder must be a .safetensors file")
            model_dir = None
        else:
            model_dir = path / "text_encoder" if (path / "text_encoder").is_dir() else path
        if tokenizer_path is not None:
            tokenizer_folders = [Path(tokenizer_path).expanduser()]
        else:
            tokenizer_folders = tokenizer_candidates(path if model_dir is None else model_dir)
        _raise_if_missing(path, model_dir, tokenizer_folders)

        tokenizer_dir = next(folder for folder in tokenizer_folders if is_tokenizer_folder(folder))
        tokenizer = _load_tokenizer(tokenizer_dir)
        if model_dir is None:
            text_model = _load_single_file_text_model(path, tokenizer, num_attention_heads)
        else:
            text_model, loading_info = CLIPTextModel.from_pretrained(
                model_dir, local_files_only=True, output_loading_info=True
            )
            # A wrong folder would otherwise give a randomly initialised encoder with only a log line.
            missing = [key for key in loading_info["missing_keys"] if not key.endswith("position_ids")]
            if missing:
                raise ValueError(f"{model_dir}: the checkpoint lacks CLIP text-tower weights {sorted(missing)[:5]}...")
        text_model.to(device=device or "cpu", dtype=dtype or torch.float32)
        return cls(tokenizer=tokenizer, text_model=text_model)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        tokenizer_path: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        source: str = "the state dict",
    ) -> "EmotionTextEncoder":
        """From tensors already in memory, e.g. a ComfyUI ``CLIP``'s ``get_sd()``: the CLIP-L text tower
        is found under any of ``KNOWN_SINGLE_FILE_PREFIXES`` (the CLIP-L one of several towers), as in a
        single file. ``source`` names the tensors in error messages."""
        tokenizer = _load_tokenizer(Path(tokenizer_path).expanduser())
        prefix = _text_tower_prefix(list(state_dict), Path(source))
        tower = {key[len(prefix):]: tensor.detach() for key, tensor in state_dict.items() if _is_text_tower_key(key, prefix)}
        text_model = _text_model_from_tower(tower, tokenizer, None, Path(source))
        text_model.to(device=device or "cpu", dtype=dtype or torch.float32)
        return cls(tokenizer=tokenizer, text_model=text_model)

    def tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize as the released pipeline does, warning about truncated prompts.

        Returns:
            ``input_ids`` and ``attention_mask``, int64 (B, 77), on ``self.device``.
        """
        if isinstance(prompts, str) or not all(isinstance(prompt, str) for prompt in prompts):
            raise TypeError("prompts must be a list of str")
        if not prompts:
            raise ValueError("need at least one prompt")
        # verbose=False: this count deliberately exceeds the limit; our own warning reports it.
        full_lengths = [len(ids) for ids in self.tokenizer(list(prompts), verbose=False)["input_ids"]]
        for index, (prompt, length) in enumerate(zip(prompts, full_lengths)):
            if length > self.max_length:
                warnings.warn(
                    f"emotion prompt {index} is {length} tokens long (with start/end tokens); the last "
                    f"{length - self.max_length} tokens are dropped to fit CLIP's {self.max_length}: {prompt!r}",
                    PromptTruncationWarning,
                    stacklevel=3,
                )
        tokens = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        return {name: tokens[name].to(self.device) for name in ("input_ids", "attention_mask")}

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP ``last_hidden_state`` of each prompt, called with input_ids AND attention_mask.

        Args:
            prompts: B prompt strings (free text; resolve preset names with ``resolve_prompt``).

        Returns:
            (B, 77, D) tensor in the model's dtype and on its device (D = 768 for CLIP-L).
        """
        tokens = self.tokenize(prompts)
        with torch.no_grad():
            outputs = self.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return outputs.last_hidden_state


def blend_emotion(neutral: torch.Tensor, target: torch.Tensor, intensity: float) -> torch.Tensor:
    """``neutral + intensity * (target - neutral)`` in embedding space.

    Computed in float32 with ``torch.lerp``, which returns exactly ``neutral`` at 0 and exactly
    ``target`` at 1. Intensities in (1, 2] extrapolate beyond the target (an exaggerated emotion).

    Args:
        neutral, target: (..., 77, D) embeddings of the same shape.
        intensity: in [0, MAX_EMOTION_INTENSITY].

    Returns:
        tensor shaped and typed like ``target``.
    """
    intensity = check_emotion_intensity(intensity)
    if neutral.shape != target.shape:
        raise ValueError(f"neutral {tuple(neutral.shape)} and target {tuple(target.shape)} shapes differ")
    blended = torch.lerp(neutral.float(), target.float(), intensity)
    return blended.to(target.dtype)


def emotion_embedding(
    encoder: EmotionTextEncoder,
    text_or_preset: str,
    intensity: float = 1.0,
    neutral: str = NEUTRAL_PRESET,
) -> torch.Tensor:
    """Embedding of a preset or free-text emotion at an intensity.

    Args:
        encoder: the CLIP text encoder.
        text_or_preset: preset name (``"happy"``, ``"happy#1"``) or free emotive text.
        intensity: 0 = ``neutral``, 1 = exactly ``encoder.encode([prompt])``, up to 2 exaggerates.
        neutral: preset or text that intensity 0 means.

    Returns:
        (1, 77, D) in the encoder's dtype and device.
    """
    intensity = check_emotion_intensity(intensity)
    keyframe = EmotionKeyframe(time=0.0, prompt=text_or_preset, intensity=intensity)
    return keyframe_embeddings(encoder, [keyframe], neutral=neutral)


def keyframe_embeddings(
    encoder: EmotionTextEncoder,
    keyframes: Sequence[EmotionKeyframe],
    neutral: str = NEUTRAL_PRESET,
) -> torch.Tensor:
    """The embedding each keyframe asks for (prompt blended from ``neutral`` at its intensity).

    Each distinct prompt is encoded once; the neutral prompt only when some intensity is not 1.

    Returns:
        (K, 77, D) in the encoder's dtype and device.
    """
    if not keyframes:
        raise ValueError("need at least one keyframe")
    targets = [resolve_prompt(keyframe.prompt) for keyframe in keyframes]
    neutral_prompt = resolve_prompt(neutral)
    needed = [target for target, keyframe in zip(targets, keyframes) if keyframe.intensity != 0.0]
    if any(keyframe.intensity != 1.0 for keyframe in keyframes):
        needed.append(neutral_prompt)
    encoded = encoder.encode_each(needed)
    rows = []
    for target, keyframe in zip(targets, keyframes):
        if keyframe.intensity == 1.0:
            rows.append(encoded[target])
        elif keyframe.intensity == 0.0:
            rows.append(encoded[neutral_prompt])
        else:
            rows.append(blend_emotion(encoded[neutral_prompt], encoded[target], keyframe.intensity))
    return torch.cat(rows, dim=0)


def schedule_embeddings(
    encoder: EmotionTextEncoder,
    keyframes: Sequence[EmotionKeyframe] | str,
    num_frames: int,
    fps: float,
    transition: float = 0.5,
    align: TransitionAlign = "start",
    neutral: str = NEUTRAL_PRESET,
) -> torch.Tensor:
    """Per-frame emotion embeddings for a video from emotion keyframes.

    Frame ``f`` (at ``f / fps`` s) holds the first keyframe before it starts and cross-fades
    (smoothstep over ``transition`` s) into each later keyframe; see ``keyframe_blend_weights``.
    Frames outside every transition equal their keyframe's ``emotion_embedding`` exactly.

    Args:
        encoder: the CLIP text encoder.
        keyframes: keyframes (sorted by time), or schedule text for ``parse_emotion_schedule``.
        num_frames: T, the number of video frames.
        fps: video frame rate (EmoCAST runs at 25).
        transition: cross-fade duration in seconds (0 = hard switch).
        align: ``"start"`` begins a cross-fade at its keyframe, ``"center"`` centres it there.
        neutral: preset or text that intensity 0 means.

    Returns:
        (T, 77, D) in the encoder's dtype and device, or (1, 77, D) for a single keyframe (see
        ``frame_embeddings``). At 25 fps CLIP-L float32 is about 5.9 MB a second of video.
    """
    if isinstance(keyframes, str):
        keyframes = parse_emotion_schedule(keyframes)
    keyframes = list(keyframes)
    per_keyframe = keyframe_embeddings(encoder, keyframes, neutral=neutral)  # (K, 77, D)
    return frame_embeddings(per_keyframe, [keyframe.time for keyframe in keyframes], num_frames, fps, transition, align)


def frame_embeddings(
    keyframe_tokens: torch.Tensor,
    keyframe_times: Sequence[float],
    num_frames: int,
    fps: float,
    transition: float = 0.5,
    align: TransitionAlign = "start",
) -> torch.Tensor:
    """Blend per-keyframe embeddings into per-frame ones (``keyframe_blend_weights``).

    Args:
        keyframe_tokens: (K, 77, D), e.g. from ``keyframe_embeddings``.
        keyframe_times: K strictly increasing times in seconds.
        num_frames, fps, transition, align: as for ``schedule_embeddings``.

    Returns:
        (T, 77, D) in ``keyframe_tokens``' dtype and device; for a single keyframe its (1, 77, D)
        embedding, which holds for every frame (``EmotionConditions`` broadcasts it) without T copies.
    """
    if keyframe_tokens.shape[0] != len(keyframe_times):
        raise ValueError(f"{keyframe_tokens.shape[0]} keyframe embeddings for {len(keyframe_times)} keyframe times")
    weights = keyframe_blend_weights(list(keyframe_times), int(num_frames), float(fps), transition, align)
    if len(keyframe_times) == 1:
        return keyframe_tokens
    # Frames far from any keyframe have one-hot weights, so this product reproduces the keyframe exactly.
    per_frame = torch.einsum("tk,kld->tld", weights.to(keyframe_tokens.device, torch.float32), keyframe_tokens.float())
    return per_frame.to(keyframe_tokens.dtype)


# --- offline loading -------------------------------------------------------------------------


def _raise_if_missing(path: Path, model_dir: Path | None, tokenizer_folders: list[Path]) -> None:
    """One FileNotFoundError naming every missing file and where it should go."""
    missing: list[str] = []
    if model_dir is None:
        if not path.is_file():
            missing.append(
                f"{path}: the CLIP ViT-L/14 text encoder as one .safetensors file "
                "(e.g. clip_l.safetensors in ComfyUI's models/text_encoders)"
            )
    else:
        if not (model_dir / "config.json").is_file():
            missing.append(
                f"{model_dir / 'config.json'}: the CLIPTextModel config "
                "(from openai/clip-vit-large-patch14 or an SD1.5 text_encoder/)"
            )
        if not any((model_dir / name).is_file() for name in _WEIGHT_FILES):
            missing.append(f"{model_dir / 'model.safetensors'} (or pytorch_model.bin): the CLIP text encoder weights")
    if not any(is_tokenizer_folder(candidate) for candidate in tokenizer_folders):
        for candidate in tokenizer_folders:
            missing.append(
                f"{candidate / 'vocab.json'} + {candidate / 'merges.txt'} (or {candidate / 'tokenizer.json'}): "
                "the CLIP tokenizer"
            )
        missing.append(
            "  (any one tokenizer folder is enough: copy openai/clip-vit-large-patch14's tokenizer files, an SD1.5 "
            "tokenizer/ folder or ComfyUI's comfy/sd1_tokenizer there, or pass tokenizer_path=)"
        )
    if missing:
        raise FileNotFoundError("EmoCAST emotion text encoder: missing files:\n- " + "\n- ".join(missing))


def _load_tokenizer(folder: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _text_tower_prefix(keys: Sequence[str], path: Path) -> str:
    """The key prefix in front of ``embeddings.token_embedding.weight`` of the CLIP-L text tower."""
    found = [key[: -len(_TOKEN_EMBEDDING_KEY)] for key in keys if key.endswith(_TOKEN_EMBEDDING_KEY)]
    if not found:
        hint = " (it looks like an OpenCLIP-layout file, which is not supported)" if any(
            "resblocks." in key for key in keys
        ) else ""
        raise ValueError(f"{path}: no CLIP text tower in transformers layout ('…{_TOKEN_EMBEDDING_KEY}'){hint}")
    if len(found) == 1:
        return found[0]
    clip_l = [prefix for prefix in found if "clip_l" in prefix]
    if len(clip_l) == 1:
        return clip_l[0]
    for known in KNOWN_SINGLE_FILE_PREFIXES:
        for candidate in (known, known + "text_model."):
            if candidate in found:
                return candidate
    raise ValueError(f"{path}: several CLIP text towers found, under prefixes {found}; cannot tell which is CLIP-L")


def _read_text_tower(path: Path) -> dict[str, torch.Tensor]:
    """Text-tower tensors of a single-file checkpoint, keyed like ``encoder.layers.0.mlp.fc1.weight``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as checkpoint:
        keys = list(checkpoint.keys())
        prefix = _text_tower_prefix(keys, path)
        # Only the tower is read: all-in-one checkpoints also hold a UNet and a VAE.
        wanted = [key for key in keys if _is_text_tower_key(key, prefix)]
        return {key[len(prefix):]: checkpoint.get_tensor(key) for key in wanted}


def _is_text_tower_key(key: str, prefix: str) -> bool:
    return (
        key.startswith(prefix) and key[len(prefix):].startswith(_TEXT_TOWER_GROUPS)
        and not key.endswith("position_ids")  # an index buffer some exporters saved; rebuilt by the model
    )


def _config_from_text_tower(
    tensors: Mapping[str, torch.Tensor], tokenizer: CLIPTokenizer, num_attention_heads: int | None, path: Path
) -> CLIPTextConfig:
    """CLIP-L text config with sizes read from the tensor shapes."""
    try:
        vocab_size, hidden_size = tensors[_TOKEN_EMBEDDING_KEY].shape
        max_positions = tensors["embeddings.position_embedding.weight"].shape[0]
        intermediate_size = tensors["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"{path}: the CLIP text tower has no tensor {error.args[0]!r}") from None
    layer_indices = {int(match[1]) for key in tensors if (match := re.match(r"encoder\.layers\.(\d+)\.", key))}
    if num_attention_heads is None:
        if hidden_size % CLIP_HEAD_DIM:
            raise ValueError(
                f"{path}: hidden size {hidden_size} is not a multiple of {CLIP_HEAD_DIM}; pass num_attention_heads"
            )
        num_attention_heads = hidden_size // CLIP_HEAD_DIM
    config = dict(CLIP_L_TEXT_CONFIG)
    config.update(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=len(layer_indices),
        num_attention_heads=num_attention_heads,
        max_position_embeddings=max_positions,
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextConfig(**config)


def _load_single_file_text_model(
    path: Path, tokenizer: CLIPTokenizer, num_attention_heads: int | None
) -> CLIPTextModel:
    return _text_model_from_tower(_read_text_tower(path), tokenizer, num_attention_heads, path)


def _text_model_from_tower(
    tensors: Mapping[str, torch.Tensor], tokenizer: CLIPTokenizer, num_attention_heads: int | None, path: Path
) -> CLIPTextModel:
    text_model = CLIPTextModel(_config_from_text_tower(tensors, tokenizer, num_attention_heads, path))
    # transformers 4.x nests the tower under "text_model.", 5.x does not; follow the installed one.
    expected_keys = text_model.state_dict().keys()
    nested = any(key.startswith("text_model.") for key in expected_keys)
    state_dict = {("text_model." + key if nested else key): tensor for key, tensor in tensors.items()}
    result = text_model.load_state_dict(state_dict, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: the CLIP text tower does not match a CLIPTextModel: "
            f"missing {missing}, unexpected {result.unexpected_keys}"
        )
    return text_model
