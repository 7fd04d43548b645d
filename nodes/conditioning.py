"""Conditioning nodes: reference portrait, emotion text, driving-audio features."""
from __future__ import annotations

import logging

import comfy.model_management as mm
from comfy_api.latest import io

from ..emocast_core.conditioning.audio_decode import load_audio, silent_frames
from ..emocast_core.conditioning.emotion import EMOTION_PRESETS, keyframe_embeddings
from ..emocast_core.conditioning.emotion_schedule import EmotionKeyframe
from ..emocast_core.validation import (
    NODE_OPTIONS,
    SILENCE_WARNING,
    check_emotion,
    check_speech,
    find_face,
    worded_for,
)
from .loaders import load_to_device
from .types import (
    AudioEncoderType,
    AudioFeaturesInput,
    AudioFeaturesType,
    Emotion,
    EmotionInput,
    FaceAnalyzerType,
    Reference,
    TextEncoder,
)

CATEGORY = "EmoCAST/conditioning"
CUSTOM_TEXT = "custom text"


class EmoCASTReferenceEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTReferenceEncoder",
            display_name="EmoCAST Reference Encoder",
            category=CATEGORY,
            description="Finds the face in the portrait, crops it to the model size and computes the identity "
                        "embedding and face/lip masks. Uses the first image of the batch.",
            inputs=[
                FaceAnalyzerType.Input("face_analyzer", tooltip="From EmoCAST Face Analyzer Loader."),
                io.Image.Input("image", tooltip="The portrait to animate (any size; the first image of a batch is used)."),
                io.Int.Input("size", default=512, min=64, max=2048, step=64,
                             tooltip="Side of the square video in pixels. The released model was trained at 512."),
                io.Int.Input("face_index", default=0, min=0, max=63,
                             tooltip="Which face to animate when there are several: 0 = the largest."),
                io.Float.Input("face_expand_ratio", default=1.2, min=1.0, max=3.0, step=0.05,
                               tooltip="How much the face rectangle of the face-locator and masks is grown (upstream 1.2)."),
                io.Combo.Input("on_no_face", options=["error", "center"], default="error",
                               tooltip="error: stop with a message when no face is found. center: continue with a "
                                       "centre crop, no identity embedding and generic masks."),
                io.Boolean.Input("crop_to_face", default=True,
                                 tooltip="True: cut a square around the face (use EmoCAST Paste Back to put the video "
                                         "back into the full image). False: resize the whole image like upstream."),
            ],
            outputs=[
                Reference.Output(display_name="reference",
                                 tooltip="The prepared portrait (crop, identity, masks): connect to EmoCAST Sampler "
                                         "and EmoCAST Paste Back."),
                io.Image.Output(display_name="crop",
                                tooltip="The square the video is made of, at the model size: preview it to check "
                                        "the crop."),
                io.Mask.Output(display_name="face_mask",
                               tooltip="Where the face was detected in the crop: preview it to check the detection."),
            ],
        )

    @classmethod
    def execute(cls, face_analyzer, image, size, face_index, face_expand_ratio, on_no_face, crop_to_face) -> io.NodeOutput:
        with worded_for(NODE_OPTIONS):
            prepared = find_face(
                image[:1].cpu(), face_analyzer, size=size, face_index=face_index, face_expand_ratio=face_expand_ratio,
                on_no_face=on_no_face, crop_to_face=crop_to_face,
            )
        crop = ((prepared.pixel_values.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous()
        face_mask = prepared.face_region[:, 0].float().contiguous()
        return io.NodeOutput(prepared, crop, face_mask)


class EmoCASTEmotionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTEmotionEncode",
            display_name="EmoCAST Emotion Encode",
            category=CATEGORY,
            description="Encodes the emotion: a preset or free text at an intensity, or a keyframe schedule.",
            inputs=[
                TextEncoder.Input("text_encoder", tooltip="From EmoCAST Emotion Text Encoder Loader."),
                io.Combo.Input("preset", options=[CUSTOM_TEXT, *EMOTION_PRESETS], default="happy",
                               tooltip="One of the eight MEAD emotions, or 'custom text' to use the text below."),
                io.String.Input("text", multiline=True, default="A person is talking with happy emotion.",
                                tooltip="Free emotive description, used when preset is 'custom text' "
                                        "(at most 77 CLIP tokens; longer text is cut)."),
                io.Float.Input("intensity", default=1.0, min=0.0, max=2.0, step=0.05,
                               tooltip="0 = neutral, 1 = the emotion as written, up to 2 exaggerates."),
                io.String.Input("schedule", multiline=True, default="", optional=True,
                                tooltip="Optional keyframes, one per line: '<seconds>: <preset or text> [@intensity]', "
                                        "e.g. '0: neutral' / '2.5: happy @0.8'. When set, it replaces preset/text/intensity."),
                io.Float.Input("transition", default=0.5, min=0.0, max=10.0, step=0.1, optional=True,
                               tooltip="Seconds each keyframe takes to blend in (0 = hard switch)."),
            ],
            outputs=[Emotion.Output(display_name="emotion",
                                    tooltip="The encoded emotion (per keyframe): connect to EmoCAST Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, preset=None, text=None, schedule=None):
        # When the prompt is queued, before any model loads: a bad preset or schedule, and an emotion left
        # empty (custom text chosen, no text, no schedule: the rule needs all three inputs). ComfyUI files the
        # returned line under every input this function takes, so the line starts with the input to fix.
        # None: the value comes through a link and is checked when the node runs.
        scheduled = isinstance(schedule, str) and bool(schedule.strip())
        try:
            with worded_for(NODE_OPTIONS):
                check_emotion(
                    text=text if preset == CUSTOM_TEXT and not scheduled else None,
                    preset=None if preset in (None, CUSTOM_TEXT) else preset,
                    schedule=schedule if scheduled else None,
                )
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, text_encoder, preset, text, intensity, schedule="", transition=0.5) -> io.NodeOutput:
        scheduled = bool(schedule and schedule.strip())
        with worded_for(NODE_OPTIONS):
            keyframes = check_emotion(text=text if preset == CUSTOM_TEXT and not scheduled else None,
                                      preset=None if preset == CUSTOM_TEXT or scheduled else preset,
                                      intensity=intensity, schedule=schedule if scheduled else None)
        if scheduled:
            description = schedule.strip()
        else:
            emotion = text if preset == CUSTOM_TEXT else preset
            keyframes = [EmotionKeyframe(time=0.0, prompt=emotion, intensity=float(intensity))]
            description = f"{emotion} @{intensity:g}"
        load_to_device(text_encoder.patcher)
        encoder = text_encoder.encoder
        tokens = keyframe_embeddings(encoder, keyframes)
        uncond = encoder.unconditional()
        out = mm.intermediate_device()
        return io.NodeOutput(EmotionInput(
            keyframe_tokens=tokens.to(out), keyframe_times=[k.time for k in keyframes],
            uncond_tokens=uncond.to(out), transition=float(transition), description=description,
        ))


class EmoCASTAudioFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTAudioFeatures",
            display_name="EmoCAST Audio Features",
            category=CATEGORY,
            description="Speech features (wav2vec2) of the driving audio, one per video frame. Also returns the "
                        "exact audio span used and the number of frames the video will have.",
            inputs=[
                AudioEncoderType.Input("audio_encoder", tooltip="From EmoCAST Audio Encoder Loader."),
                io.Audio.Input("audio", tooltip="The speech (e.g. from Load Audio; a video file's sound works too)."),
                # The editor rounds to as many decimals as the step has: 0.001 lets 23.976 or 29.97 be typed.
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.001,
                               tooltip="Video frame rate, e.g. 25 or 23.976. The released model was trained at 25 fps."),
                io.Float.Input("start_time", default=0.0, min=0.0, max=1e6, step=0.1,
                               tooltip="Seconds to skip at the start of the audio."),
                io.Float.Input("duration", default=0.0, min=0.0, max=1e6, step=0.1,
                               tooltip="Seconds of audio to use; 0 = up to the end."),
                io.Boolean.Input("separate_vocals", default=True,
                                 tooltip="Isolate the voice first (only when the loader has a vocal separator)."),
                io.Int.Input("clip_length", default=16, min=1, max=64,
                             tooltip="Frames per generated clip; the features are padded to a multiple of it as "
                                     "upstream does. The sampler uses the same value. Upstream: 16."),
            ],
            outputs=[
                AudioFeaturesType.Output(display_name="audio_features",
                                         tooltip="Speech features, one per video frame: connect to EmoCAST Sampler."),
                io.Audio.Output(display_name="audio",
                                tooltip="The exact audio span used: connect it to the video node so sound and "
                                        "picture match."),
                io.Int.Output(display_name="frame_count",
                              tooltip="Frames the video will have: ceil(audio seconds x fps)."),
                io.Float.Output(display_name="fps", tooltip="The frame rate, for the video node."),
            ],
        )

    @classmethod
    def execute(cls, audio_encoder, audio, fps, start_time, duration, separate_vocals, clip_length) -> io.NodeOutput:
        sample_rate = int(audio["sample_rate"])
        decoded = load_audio(audio, sample_rate=sample_rate)  # mono, at the input's own rate
        if start_time >= decoded.duration_seconds:
            raise ValueError(f"EmoCAST Audio Features: start_time {start_time:g} s is past the end of the "
                             f"audio ({decoded.duration_seconds:.2f} s)")
        span = decoded.crop(start_time, duration if duration > 0 else None)
        first = int(round(span.start_seconds * sample_rate))
        used_audio = {"waveform": audio["waveform"][:1, :, first:first + span.num_samples].contiguous(),
                      "sample_rate": sample_rate}
        with worded_for(NODE_OPTIONS):
            silent = check_speech(span).silent
        if silent:
            logging.warning("EmoCAST Audio Features: %s", SILENCE_WARNING)
        elif separate_vocals and audio_encoder.vocal_separator is not None:
            span = audio_encoder.vocal_separator.separate(span)

        load_to_device(audio_encoder.patcher)
        # The encoder follows its weights wherever the patcher put them.
        # Streamed: the sampler gets each clip's features when it reaches that clip (flat memory for long
        # audio); they are computed wherever the encoder's weights are at that time.
        features = audio_encoder.encoder.stream(load_audio(span), fps=fps, clip_length=clip_length, allow_silence=silent)
        result = AudioFeaturesInput(features=features, clip_length=int(clip_length), audio=used_audio, silent=silent,
                                    silent_frames=silent_frames(span, fps, features.num_frames))
        return io.NodeOutput(result, used_audio, int(features.num_frames), float(fps))


CONDITIONING_NODES = [EmoCASTReferenceEncoder, EmoCASTEmotionEncode, EmoCASTAudioFeatures]
