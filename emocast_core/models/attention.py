"""Attention blocks of both UNets.

* `DecoupledTextFaceAttnProcessor` — EmoCAST's *text-guided emotive attention*: the spatial
  cross-attention of every block reads the emotion text through SD's own K/V and the 4 face-identity
  tokens through a second, new K/V pair; the two results share the query and are summed.
* `SpatialTransformerBlock` — SD's self-attention / cross-attention / feed-forward block. In the
  ReferenceNet it also returns its `norm1` output (the reference features); in the denoiser its
  self-attention can attend to those reference features as extra keys/values.
* `EmotiveAudioTransformerBlock` — Hallo's hierarchical audio attention (pose/face/lip branches
  with masks and zero-initialised 1x1 convs), whose keys/values are EmoCAST's *emotive audio
  tokens*: the emotion text queries the audio tokens first.

Every block splits its work in two: `*_kv` methods project what is fixed for a clip (run once per
clip by `DenoisingUNet.prepare`), `forward` does what depends on the latents. The attention itself
is written out here (projections -> `scaled_dot_product_attention` -> output projection, what
diffusers' `AttnProcessor2_0` computes for these modules) so the step goes through no per-call
processor dispatch. PyTorch's SDPA kernels accumulate the softmax in float32, so float16 /
bfloat16 attention over the 4096 + 4096 tokens of a 512x512 frame stays finite.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DEFAULT_OPERATIONS, Attention, FeedForward, Operations
from .prepared import CrossAttentionKV, RowSegment


def multi_head_attention(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SDPA over `attn.heads` heads. query (B, Lq, H*d), key/value (B, Lk, H*d) -> (B, Lq, H*d)."""
    batch, _, inner_dim = query.shape
    head_dim = inner_dim // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value)
    return out.transpose(1, 2).reshape(batch, -1, inner_dim)


def output_projection(attn: Attention, hidden_states: torch.Tensor) -> torch.Tensor:
    return attn.to_out[1](attn.to_out[0](hidden_states))


def self_attention(attn: Attention, hidden_states: torch.Tensor) -> torch.Tensor:
    """Plain self-attention through an `Attention`'s weights."""
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    return output_projection(attn, multi_head_attention(attn, query, key, value))


def cross_attention(attn: Attention, hidden_states: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Cross-attention with keys/values that were projected beforehand."""
    return output_projection(attn, multi_head_attention(attn, attn.to_q(hidden_states), key, value))


class DecoupledTextFaceAttnProcessor(nn.Module):
    """Cross-attention over `[text tokens ; face tokens]` with separate K/V for the face tokens.

    `encoder_hidden_states` is (B, L_text + num_face_tokens, D): the last `num_face_tokens` rows are
    the face-identity tokens. out = to_out(Attn(q, text K/V) + face_scale * Attn(q, face K/V)).

    It is the `processor` module of the block's `attn2`, so its weights are
    stored as `attn2.processor.to_k_ip.0.weight` / `to_v_ip.0.weight`, the released layout.
    """

    def __init__(
        self,
        hidden_size: int,
        cross_attention_dim: int,
        num_face_tokens: int = 4,
        face_scale: float = 1.0,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.num_face_tokens = num_face_tokens
        self.face_scale = face_scale
        # Lists of one, as in the IP-Adapter layout the checkpoint uses.
        self.to_k_ip = nn.ModuleList([operations.Linear(cross_attention_dim, hidden_size, bias=False)])
        self.to_v_ip = nn.ModuleList([operations.Linear(cross_attention_dim, hidden_size, bias=False)])

    def key_values(self, attn: Attention, encoder_hidden_states: torch.Tensor) -> CrossAttentionKV:
        """(B, L_text + L_face, D) tokens -> their text and face keys/values."""
        split = encoder_hidden_states.shape[1] - self.num_face_tokens
        text_tokens, face_tokens = encoder_hidden_states[:, :split], encoder_hidden_states[:, split:]
        return CrossAttentionKV(
            attn.to_k(text_tokens), attn.to_v(text_tokens), self.to_k_ip[0](face_tokens), self.to_v_ip[0](face_tokens)
        )

    def attend(self, attn: Attention, hidden_states: torch.Tensor, kv: CrossAttentionKV) -> torch.Tensor:
        query = attn.to_q(hidden_states)
        text_out = multi_head_attention(attn, query, kv.text_key, kv.text_value)
        face_out = multi_head_attention(attn, query, kv.face_key, kv.face_value)
        return output_projection(attn, text_out + self.face_scale * face_out)


class SpatialTransformerBlock(nn.Module):
    """SD1.5's transformer block with decoupled text/face cross-attention.

    Shapes: hidden_states (N, L, C); cross-attention keys/values per row (see `cross_attention_kv`).
    `reference_kv` (bank rows, L_ref, C) are extra keys/values of the self-attention for the frame
    rows whose `RowSegment` has a `bank_start`; the other rows run plain self-attention —
    upstream's reference-free unconditional branch.
    """

    def __init__(
        self, dim: int, num_heads: int, cross_attention_dim: int, num_face_tokens: int, operations: Operations = DEFAULT_OPERATIONS
    ):
        super().__init__()
        head_dim = dim // num_heads
        self.norm1 = operations.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=num_heads, dim_head=head_dim, operations=operations)
        self.norm2 = operations.LayerNorm(dim)
        self.attn2 = Attention(
            query_dim=dim,
            cross_attention_dim=cross_attention_dim,
            heads=num_heads,
            dim_head=head_dim,
            processor=DecoupledTextFaceAttnProcessor(dim, cross_attention_dim, num_face_tokens, operations=operations),
            operations=operations,
        )
        self.norm3 = operations.LayerNorm(dim)
        self.ff = FeedForward(dim, operations=operations)

    # --- once per clip ---------------------------------------------------------------------------

    def cross_attention_kv(self, encoder_hidden_states: torch.Tensor) -> CrossAttentionKV:
        """(N, L_text + L_face, D) text+face tokens -> their keys/values for this block."""
        return self.attn2.processor.key_values(self.attn2, encoder_hidden_states)

    def reference_kv(self, reference_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, L, C) ReferenceNet tokens of this block -> self-attention keys/values."""
        return self.attn1.to_k(reference_tokens), self.attn1.to_v(reference_tokens)

    # --- every step ------------------------------------------------------------------------------

    def _self_attention(
        self, normed: torch.Tensor, reference_kv: Optional[tuple[torch.Tensor, torch.Tensor]], segments: Sequence[RowSegment]
    ) -> torch.Tensor:
        attn = self.attn1
        query, key, value = attn.to_q(normed), attn.to_k(normed), attn.to_v(normed)
        if reference_kv is None:
            return output_projection(attn, multi_head_attention(attn, query, key, value))
        bank_key, bank_value = reference_kv
        pieces = []
        for segment in segments:  # a fixed layout decided per clip, not per step
            rows = slice(segment.start, segment.stop)
            if segment.bank_start is None:
                pieces.append(multi_head_attention(attn, query[rows], key[rows], value[rows]))
                continue
            bank = slice(segment.bank_start, segment.bank_start + segment.stop - segment.start)
            pieces.append(multi_head_attention(
                attn, query[rows], torch.cat([key[rows], bank_key[bank]], dim=1), torch.cat([value[rows], bank_value[bank]], dim=1)
            ))
        attended = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return output_projection(attn, attended)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cross_kv: CrossAttentionKV,
        reference_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        segments: Sequence[RowSegment] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (hidden_states, norm1 output). The second is what the ReferenceNet shares."""
        normed = self.norm1(hidden_states)
        hidden_states = self._self_attention(normed, reference_kv, segments) + hidden_states
        hidden_states = self.attn2.processor.attend(self.attn2, self.norm2(hidden_states), cross_kv) + hidden_states
        hidden_states = self.ff(self.norm3(hidden_states)) + hidden_states
        return hidden_states, normed


class EmotiveAudioTransformerBlock(nn.Module):
    """Per-frame audio attention of the denoiser (one per audio module).

    hidden_states (N, H*W, C) with N = batch x frames; audio_tokens (N, 32, Da);
    emotion_tokens (N, 77, De); region_masks: pose/"full", face and lip masks, each (N, H*W);
    region_scales: [pose, face, lip] weights; frame_weights: (N, 1, 1) weights of all three branches per
    frame row (0 = that frame without the audio), or None.

        h  <- h + SelfAttn(LN1 h)
        A' =  LN(Attn(Q = emotion tokens, K/V = audio tokens))          (77 emotive audio tokens)
        h  <- h + sum_r s_r * ZeroConv_r(CrossAttn_r(LN2 h, A') * M_r)
        h  <- h + FF(LN3 h)

    A' depends only on the emotion text and the audio, so `emotive_audio_kv` computes it (and the
    three branches' keys/values of it) once per clip.
    """

    REGIONS = ("full", "face", "lip")

    def __init__(
        self,
        dim: int,
        num_heads: int,
        audio_token_dim: int,
        emotion_token_dim: int,
        emotive_head_dim: int,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        head_dim = dim // num_heads
        self.norm1 = operations.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=num_heads, dim_head=head_dim, operations=operations)
        # Emotion queries audio: output has one token per text token, width of the text tokens.
        self.attn_audioemo = Attention(
            query_dim=emotion_token_dim, cross_attention_dim=audio_token_dim, heads=num_heads, dim_head=emotive_head_dim,
            operations=operations,
        )
        self.postnorm_audioemo = operations.LayerNorm(emotion_token_dim)
        self.norm2 = operations.LayerNorm(dim)
        # attn2_0 / attn2_1 / attn2_2 and the zero convs: pose ("full"), face, lip branches.
        for index, region in enumerate(self.REGIONS):
            self.add_module(
                f"attn2_{index}",
                Attention(
                    query_dim=dim, cross_attention_dim=emotion_token_dim, heads=num_heads, dim_head=head_dim, operations=operations
                ),
            )
            conv = operations.Conv2d(dim, dim, kernel_size=1)
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.add_module(f"zero_conv_{region}", conv)
        self.norm3 = operations.LayerNorm(dim)
        self.ff = FeedForward(dim, operations=operations)

    def _branches(self) -> tuple[Attention, Attention, Attention]:
        return self.attn2_0, self.attn2_1, self.attn2_2

    def emotive_audio_kv(self, audio_tokens: torch.Tensor, emotion_tokens: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """(N, 32, Da) audio tokens, (N, 77, De) emotion tokens -> the pose/face/lip branches'
        keys and values of the emotive audio tokens A'."""
        attn = self.attn_audioemo
        attended = cross_attention(attn, emotion_tokens, attn.to_k(audio_tokens), attn.to_v(audio_tokens))
        emotive_audio = self.postnorm_audioemo(attended)
        return tuple((branch.to_k(emotive_audio), branch.to_v(emotive_audio)) for branch in self._branches())

    def forward(
        self,
        hidden_states: torch.Tensor,
        height: int,
        width: int,
        emotive_audio_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
        region_masks: Sequence[torch.Tensor],
        region_scales: Sequence[float],
        frame_weights: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        hidden_states = self_attention(self.attn1, self.norm1(hidden_states)) + hidden_states
        normed = self.norm2(hidden_states)
        batch, _, channels = normed.shape
        branches = []
        for index, region in enumerate(self.REGIONS):
            key, value = emotive_audio_kv[index]
            attended = cross_attention(self._branches()[index], normed, key, value)
            attended = attended * region_masks[index][:, :, None]
            spatial = attended.transpose(1, 2).reshape(batch, channels, height, width)
            spatial = getattr(self, f"zero_conv_{region}")(spatial)
            branches.append(spatial.reshape(batch, channels, height * width).transpose(1, 2))
        if frame_weights is not None:
            branches = [branch * frame_weights for branch in branches]
        # Same summation order as upstream (pose + face + lip + residual).
        hidden_states = (
            region_scales[0] * branches[0] + region_scales[1] * branches[1] + region_scales[2] * branches[2] + hidden_states
        )
        return self.ff(self.norm3(hidden_states)) + hidden_states
