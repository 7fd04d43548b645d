"""ComfyUI's own `AUDIO_ENCODER` (from Load Audio Encoder, with a wav2vec2-base file) behind the `stream`
call the EmoCAST Audio Features node makes on its audio encoder.

ComfyUI runs wav2vec2 at its own rate (~50 vectors a second) and returns every layer; the per-frame
features are then interpolated from those outputs (`emocast_core.conditioning.audio.features_from_native_rate`),
which is not what upstream computes: see docs/comfyui.md for the difference. The whole clip is encoded
at once (no streaming), where ComfyUI loaded the encoder.
"""
from __future__ import annotations

from ..emocast_core.conditioning.audio import WAV2VEC_SAMPLE_RATE, AudioFeatures, features_from_native_rate

# What EmoCAST's audio projection reads: the outputs of wav2vec2-base's 12 layers of 768.
LAYERS, WIDTH = 12, 768


class ComfyAudioEncoderAdapter:
    """Wraps a `comfy.audio_encoders.audio_encoders.AudioEncoderModel`; `patcher` is its `ModelPatcher`."""

    def __init__(self, audio_encoder):
        # ComfyUI's wav2vec2: model.encoder.layers, closed by model.encoder.layer_norm.
        encoder = getattr(getattr(audio_encoder, "model", None), "encoder", None)
        layers = getattr(encoder, "layers", None)
        width = getattr(getattr(encoder, "layer_norm", None), "normalized_shape", (None,))[0]
        if layers is None or (len(layers), width) != (LAYERS, WIDTH):
            found = "not a wav2vec2 model" if layers is None else f"{len(layers)} layers of {width}"
            raise ValueError(f"EmoCAST needs wav2vec2-base ({LAYERS} layers of {WIDTH}); this audio encoder is {found}: "
                             "load wav2vec2-base-960h as a single .safetensors file")
        self.comfy_encoder = audio_encoder
        self.patcher = audio_encoder.patcher

    def stream(self, audio, *, fps, clip_length, allow_silence=False) -> AudioFeatures:
        return features_from_native_rate(self._hidden_states, audio, fps=fps, clip_length=clip_length,
                                         allow_silence=allow_silence)

    def _hidden_states(self, input_values):
        # The signal is already normalised: ComfyUI's wav2vec2-base set-up does not normalise its input.
        # Batch and channel axes first, as ComfyUI's encode_audio takes an AUDIO waveform; at 16 kHz its
        # resampling is a no-op.
        output = self.comfy_encoder.encode_audio(input_values[:, None], WAV2VEC_SAMPLE_RATE)
        return [state.float().cpu() for state in output["encoded_audio_all_layers"]]
