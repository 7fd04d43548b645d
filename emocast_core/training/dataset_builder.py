"""`dataset build`: talking-head videos -> a training set (index.jsonl + safetensors shards).

For each video (any frame rate, size and container, audio inside):

1. decode at 25 fps; detect the face on every `detect_every`-th frame and fix one square crop for
   the whole video (`stable_face_crop`); videos where too few sampled frames show a face are skipped;
2. decode again, cut every frame to the S x S crop, and find each crop's face and landmarks;
3. per clip (a whole video, or `max_frames`-long segments of it): upstream's union region masks
   (`union_masks`), the ArcFace embedding of its first frame with a face, the wav2vec2 features of
   its audio (one row per frame) and its 16 kHz waveform;
4. its emotive descriptions (`captions.CaptionSource`);
5. shards are written atomically and indexed only when complete, so an interrupted build resumes
   where it stopped (`ShardWriter.done_sources`).

Videos with no face, no (or silent) audio, or fewer than `min_frames` frames are skipped and listed in
skipped.jsonl with the reason.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..conditioning.audio import AudioEncoder
from ..conditioning.audio_decode import WAV2VEC_SAMPLE_RATE, AudioDecodeError, is_silent, load_audio
from ..conditioning.crop import DEFAULT_CROP_SCALE, crop_image
from ..conditioning.face import FaceAnalyzer
from ..conditioning.masks import FaceLandmarks
from .captions import CaptionSource
from .shards import ClipRecord, ClipTensors, ShardWriter, encode_frame
from .union_masks import union_region_masks
from .video_frames import iter_frames_at_fps, stable_face_crop

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
TRAINING_FPS = 25


class SkipVideo(Exception):
    """A video that cannot become training data; the message is the reason recorded."""


@dataclass
class BuildOptions:
    """size: side of the square crops (multiple of 64). crop_scale: crop side / face box side.
    detect_every: frames between face detections when choosing the crop. min_face_fraction: share
    of those frames that must show a face. min_frames / max_frames: shortest clip kept and longest
    clip written (0 = no limit; longer videos are cut into segments). frame_codec / jpeg_quality:
    how frames are stored. allow_silence: keep videos whose audio is silent."""

    size: int = 512
    crop_scale: float = DEFAULT_CROP_SCALE
    detect_every: int = 5
    min_face_fraction: float = 0.5
    min_frames: int = 25
    max_frames: int = 0
    frame_codec: str = "jpeg"
    jpeg_quality: int = 95
    clips_per_shard: int = 16
    allow_silence: bool = False

    def __post_init__(self):
        if self.size % 64:
            raise ValueError(f"size must be a multiple of 64, got {self.size}")
        if self.max_frames and self.max_frames < self.min_frames:
            raise ValueError("max_frames must be at least min_frames")


@dataclass
class BuildReport:
    added_clips: int = 0
    added_videos: int = 0
    skipped: list = field(default_factory=list)  # (source, reason)
    already_done: int = 0


def find_videos(folder: Path) -> list[Path]:
    """Video files under `folder`, sorted (the build order, and so the resume order)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def clip_id(relative_path: Path, segment: int) -> str:
    digest = hashlib.sha1(relative_path.as_posix().encode()).hexdigest()[:12]
    return f"{digest}-{segment:03d}"


class DatasetBuilder:
    """analyzer: loaded face models (`FaceAnalyzer`); audio_encoder: wav2vec2 (`AudioEncoder`);
    captions: where labels and descriptions come from."""

    def __init__(
        self, analyzer: FaceAnalyzer, audio_encoder: AudioEncoder, captions: CaptionSource, options: BuildOptions | None = None
    ):
        self.analyzer = analyzer
        self.audio_encoder = audio_encoder
        self.captions = captions
        self.options = options or BuildOptions()

    def build(self, videos_dir: Path, out_dir: Path, progress: Optional[Callable[[str, str], None]] = None) -> BuildReport:
        """Process every video not yet in `out_dir`; `progress(source, status)` after each one."""
        videos_dir, out_dir = Path(videos_dir), Path(out_dir)
        writer = ShardWriter(out_dir, self.options.clips_per_shard)
        done = writer.done_sources()
        report = BuildReport()
        for path in find_videos(videos_dir):
            relative = path.relative_to(videos_dir)
            source = relative.as_posix()
            if source in done:
                report.already_done += 1
                continue
            try:
                records, tensors = self.process_video(path, relative)
            except SkipVideo as reason:
                writer.skip(source, str(reason))
                report.skipped.append((source, str(reason)))
                status = f"skipped: {reason}"
            else:
                writer.add_source(records, tensors)
                report.added_clips += len(records)
                report.added_videos += 1
                status = f"{len(records)} clip(s)"
            logger.info("%s: %s", source, status)
            if progress is not None:
                progress(source, status)
        writer.flush()
        return report

    # --- one video -------------------------------------------------------------------------------

    def process_video(self, path: Path, relative: Path) -> tuple[list[ClipRecord], list[ClipTensors]]:
        """The clips of one video, or `SkipVideo` with the reason.

        Cheap checks come first; the captioner (possibly a large model) runs only for usable videos.
        """
        options = self.options
        label = self.captions.label(relative)
        waveform, features = self._audio(path)
        crop, decoded_frames = self._choose_crop(path)
        if min(decoded_frames, features.shape[0]) < options.min_frames:
            raise SkipVideo(
                f"too short: {min(decoded_frames, features.shape[0])} frames at {TRAINING_FPS} fps, need {options.min_frames}"
            )
        captions = self.captions.describe(path, relative, label)
        if not captions:
            raise SkipVideo("no caption: no caption file entry, captioner result or emotion label")
        caption_source = self._caption_source(relative)
        frames, landmarks, embeddings = self._cropped_frames(path, crop)
        num_frames = min(len(frames), features.shape[0])

        segment_length = options.max_frames or num_frames
        records, tensors = [], []
        for segment, start in enumerate(range(0, num_frames, segment_length)):
            stop = min(start + segment_length, num_frames)
            if stop - start < options.min_frames:
                break
            clip = self._clip_tensors(frames, landmarks, embeddings, segment, features, waveform, start, stop)
            if clip is None:
                continue
            records.append(
                ClipRecord(
                    id=clip_id(relative, segment), source=relative.as_posix(), shard="", num_frames=stop - start,
                    size=options.size, captions=list(captions), emotion=label.emotion, intensity=label.intensity,
                    speaker=label.speaker, caption_source=caption_source, segment=segment, start_frame=start,
                    fps=TRAINING_FPS, frame_codec=options.frame_codec,
                )
            )
            tensors.append(clip)
        if not records:
            raise SkipVideo("no face: no segment has a face with landmarks")
        return records, tensors

    def _caption_source(self, relative: Path) -> str:
        if self.captions.captions is not None and self.captions.captions(relative):
            return "file"
        if self.captions.captioner is not None:
            return "captioner"
        return "label"

    def _audio(self, path: Path) -> tuple[np.ndarray, torch.Tensor]:
        """(16 kHz float waveform, wav2vec2 features (T, L, C) at 25 fps, unpadded)."""
        try:
            decoded = load_audio(path, sample_rate=WAV2VEC_SAMPLE_RATE)
        except AudioDecodeError as error:
            raise SkipVideo(f"no audio: {str(error).replace(f'{path}: ', '')}") from None
        if not self.options.allow_silence and is_silent(decoded.waveform):
            raise SkipVideo("no audio: the audio track is silent")
        try:
            features = self.audio_encoder.encode(decoded, fps=TRAINING_FPS, clip_length=0, allow_silence=True)
        except AudioDecodeError as error:
            raise SkipVideo(f"no audio: {error}") from None
        return decoded.waveform, features.features[: features.num_frames].float().cpu()

    def _choose_crop(self, path: Path):
        """(the video's crop, its number of frames at 25 fps)."""
        boxes, sampled, source_size, count = [], 0, None, 0
        for index, frame in enumerate(iter_frames_at_fps(path, TRAINING_FPS)):
            source_size, count = frame.shape[:2], index + 1
            if index % max(1, self.options.detect_every):
                continue
            sampled += 1
            faces = self.analyzer.detect(frame)
            if faces:
                boxes.append(np.asarray(faces[0].bbox, dtype=np.float64))
        if sampled == 0:
            raise SkipVideo("too short: the video has no frames")
        if not boxes or len(boxes) / sampled < self.options.min_face_fraction:
            raise SkipVideo(f"no face: a face was found on {len(boxes)} of {sampled} sampled frames")
        return stable_face_crop(boxes, source_size, self.options.size, self.options.crop_scale), count

    def _cropped_frames(self, path: Path, crop):
        """Encoded S x S crops, per-frame landmarks in crop pixels (None: no face), and the ArcFace
        embedding of the first frame with a face in each segment (segment index -> (512,)).

        Frames are encoded as they come so a long video never holds all raw crops in memory.
        """
        options = self.options
        encoded, landmarks, embeddings = [], [], {}
        for index, frame in enumerate(iter_frames_at_fps(path, TRAINING_FPS)):
            cropped = crop_image(frame.astype(np.float32) / 255.0, crop)
            detected = self.analyzer.detect(cropped)
            face = detected[0] if detected else None
            segment = index // options.max_frames if options.max_frames else 0
            if face is not None and segment not in embeddings:
                # Upstream takes the identity of the first frame where a face is found.
                embeddings[segment] = np.asarray(self.analyzer.embedding(cropped, face), dtype=np.float32).reshape(-1)
            landmarks.append(self.analyzer.landmarks(cropped, face) if face is not None else None)
            encoded.append(encode_frame(cropped, options.frame_codec, options.jpeg_quality))
        return encoded, landmarks, embeddings

    def _clip_tensors(self, frames, landmarks, embeddings, segment, features, waveform, start, stop) -> Optional[ClipTensors]:
        options = self.options
        clip_landmarks = landmarks[start:stop]
        present = [points for points in clip_landmarks if points is not None]
        if not present or segment not in embeddings:
            return None
        masks = union_region_masks(present, options.size)
        samples_per_frame = WAV2VEC_SAMPLE_RATE / TRAINING_FPS
        audio = waveform[int(round(start * samples_per_frame)): int(round(stop * samples_per_frame))]
        return ClipTensors(
            frames=frames[start:stop],
            audio_features=features[start:stop],
            audio_waveform=torch.from_numpy(np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)),
            face_embedding=torch.from_numpy(embeddings[segment]),
            face_region=torch.from_numpy(masks.face_region),
            soft_full=torch.from_numpy(masks.soft_full),
            soft_face=torch.from_numpy(masks.soft_face),
            soft_lip=torch.from_numpy(masks.soft_lip),
            landmarks_oval=_stack_points([points.oval if points is not None else None for points in clip_landmarks]),
            landmarks_lips=_stack_points([points.lips if points is not None else None for points in clip_landmarks]),
        )


def _stack_points(points: list) -> torch.Tensor:
    """(T, K, 2) float32 with NaN rows for frames without a face."""
    count = next(p.shape[0] for p in points if p is not None)
    stacked = np.full((len(points), count, 2), np.nan, dtype=np.float32)
    for index, value in enumerate(points):
        if value is not None:
            stacked[index] = value
    return torch.from_numpy(stacked)


def landmarks_from_tensors(oval: torch.Tensor, lips: torch.Tensor) -> list[Optional[FaceLandmarks]]:
    """The inverse of the stored (T, K, 2) arrays: per-frame `FaceLandmarks` or None."""
    result = []
    for frame_oval, frame_lips in zip(oval.numpy(), lips.numpy()):
        result.append(None if np.isnan(frame_oval).any() else FaceLandmarks(frame_oval.astype(np.float64), frame_lips.astype(np.float64)))
    return result
