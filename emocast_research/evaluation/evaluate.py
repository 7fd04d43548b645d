"""``evaluate_videos``: every metric of a set of generated videos, one video at a time.

Each metric runs only when what it needs was given (its weight file, ground truth, a reference
portrait, an emotion label, an audio track); otherwise the report says why it is missing. All
inputs and weight files are checked before the first video is decoded.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from emocast_core.conditioning.image_input import to_rgb_float, to_uint8
from emocast_core.devices import pick_device

from . import temporal
from .emotion import EmotionClassifier, face_crop, requested_emotion
from .faces import (
    face_boxes,
    face_models_folder,
    identity_similarity,
    load_face_analyzer,
    sampled_indices,
)
from .frechet import (
    I3DFeatures,
    InceptionFeatures,
    frechet_distance,
    require_cdfvd_i3d,
    require_torchmetrics,
    video_clips,
)
from .inputs import VideoLabels, collect_videos, ground_truth_in_folder, labels_for
from .media import (
    AUDIO_SAMPLE_RATE,
    EVALUATION_FPS,
    EvaluatedVideo,
    read_evaluated_video,
)
from .report import METRIC_NAMES, EvaluationReport, VideoResult
from .syncnet import SyncNet, sync_scores, syncnet_face_crops

# Means over videos of these per-video values make the summary (FID and FVD are pooled instead).
AVERAGED_METRICS = ("sync_c", "sync_d", "identity_similarity", "emotion_accuracy", "seam_ratio",
                    "mouth_audio_correlation")


@dataclass(frozen=True)
class MetricWeights:
    """User-supplied metric networks; a metric whose file is None is skipped (nothing is downloaded).

    Attributes:
        syncnet: ``syncnet_v2.model`` (Sync-C / Sync-D).
        inception: ``inception-2015-12-05.pt`` TorchScript Inception (FID).
        i3d: ``i3d_pretrained_400.pt`` (FVD).
        face_models: InsightFace antelopev2 folder with ``scrfd_10g_bnkps.onnx`` and ``glintr100.onnx``
            (identity similarity; also face boxes for the SyncNet crop, the mouth box and the
            emotion crop).
        emotion_classifier: HSEmotion / EmotiEffLib ONNX expression classifier (emotion accuracy).
    """

    syncnet: Path | None = None
    inception: Path | None = None
    i3d: Path | None = None
    face_models: Path | None = None
    emotion_classifier: Path | None = None


@dataclass(frozen=True)
class EvaluationSettings:
    """fps: rate the videos are read at; clip_length / overlap: how the generator cut the video into
    clips (for the seam ratio); sampled_frames: frames per video for identity and emotion;
    fid_frames: at most this many frames per video for FID (None = all); vshift: SyncNet's offset
    search range in frames; device: "auto", "cpu", "cuda", ..."""

    fps: float = EVALUATION_FPS
    clip_length: int = 16
    overlap: int = 0
    sampled_frames: int = 16
    fid_frames: int | None = None
    vshift: int = 15
    device: str = "auto"

    def __post_init__(self):
        if self.clip_length < 2 or not 0 <= self.overlap < self.clip_length:
            raise ValueError(f"clip length must be at least 2 and overlap in [0, clip length); got "
                             f"{self.clip_length} and {self.overlap}")
        if self.sampled_frames < 1 or self.vshift < 1 or self.fps <= 0:
            raise ValueError("sampled frames, vshift and fps must be positive")


def check_weights(weights: MetricWeights) -> None:
    """Refuse missing weight files and missing optional libraries before any slow work."""
    for name in ("syncnet", "inception", "i3d", "emotion_classifier"):
        path = getattr(weights, name)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{name.replace('_', ' ')} weights: no such file {path}")
    if weights.face_models is not None:
        face_models_folder(weights.face_models)
    if weights.syncnet is not None:
        _require("python_speech_features", "Sync-C/Sync-D")
        _require("scipy", "Sync-C/Sync-D")
    if weights.inception is not None or weights.i3d is not None:
        require_torchmetrics()
    if weights.i3d is not None:
        require_cdfvd_i3d()


def _require(module: str, metric: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{metric} need the '{module}' package: pip install 'comfyui-emocast[evaluate]'")


class Evaluator:
    """Loads the given metric networks once and evaluates videos with them."""

    def __init__(self, weights: MetricWeights, settings: EvaluationSettings = EvaluationSettings()):
        check_weights(weights)
        self.settings = settings
        device = pick_device(settings.device)
        self.notes: dict[str, str] = {}
        self.syncnet = self.inception = self.i3d = self.face_analyzer = self.emotion_classifier = None
        if weights.syncnet is not None:
            self.syncnet = SyncNet.from_file(weights.syncnet, device=device)
        else:
            self.notes["sync_c"] = self.notes["sync_d"] = "skipped: no SyncNet weights (--syncnet syncnet_v2.model)"
        if weights.inception is not None:
            self.inception = InceptionFeatures.from_file(weights.inception, device=device)
        else:
            self.notes["fid"] = "skipped: no Inception weights (--inception inception-2015-12-05.pt)"
        if weights.i3d is not None:
            self.i3d = I3DFeatures.from_file(weights.i3d, device=device)
        else:
            self.notes["fvd"] = "skipped: no I3D weights (--i3d i3d_pretrained_400.pt)"
        if weights.face_models is not None:
            self.face_analyzer = load_face_analyzer(weights.face_models, onnx_providers(device))
        else:
            self.notes["identity_similarity"] = "skipped: no face models (--face-models antelopev2 folder)"
        if weights.emotion_classifier is not None:
            self.emotion_classifier = EmotionClassifier.from_file(weights.emotion_classifier, onnx_providers(device))
        else:
            self.notes["emotion_accuracy"] = "skipped: no expression classifier (--emotion-model FILE.onnx)"

    def evaluate(self, videos: Iterable[str | Path], labels: Mapping[str, VideoLabels] | None = None,
                 ground_truth_folder: str | Path | None = None, progress: bool = True) -> EvaluationReport:
        return self.run(plan_evaluation(videos, labels, ground_truth_folder), progress)

    def run(self, plans: list[VideoPlan], progress: bool = True) -> EvaluationReport:
        pooled = {"fid": ([], []), "fvd": ([], [])}
        results = []
        for plan in tqdm(plans, desc="evaluating", unit="video", disable=not progress, file=sys.stderr):
            try:
                results.append(self._evaluate_one(plan, pooled))
            except (OSError, ValueError) as error:  # an unreadable file costs its row, not the run
                result = VideoResult(plan.path)
                result.notes.append(f"not evaluated: {error}")
                results.append(result)
        summary = self._summary(results, pooled)
        return EvaluationReport(results, summary, self._report_notes(results, summary))

    # -- one video ---------------------------------------------------------------------------------

    def _evaluate_one(self, plan: VideoPlan, pooled: dict) -> VideoResult:
        settings, label = self.settings, plan.labels
        result = VideoResult(plan.path)
        video = read_evaluated_video(plan.path, settings.fps)
        # Read the ground truth up front too, so a bad file fails the row before any feature is pooled.
        truth_frames = None
        if plan.ground_truth is not None and (self.inception is not None or self.i3d is not None):
            truth_frames = read_evaluated_video(plan.ground_truth, settings.fps, with_audio=False).frames
        frames = video.frames
        result.metrics["seam_ratio"] = temporal.seam_ratio(frames, settings.clip_length, settings.overlap)

        boxes, detections = None, [None] * len(frames)
        if self.face_analyzer is not None:
            boxes, detections = face_boxes(self.face_analyzer, frames)
            if boxes is None:
                result.notes.append("no face found in any frame: whole frames used")

        if video.audio is None:
            result.notes.append("no audio track: Sync-C/Sync-D and mouth-audio correlation skipped")
        else:
            result.metrics["mouth_audio_correlation"] = temporal.mouth_audio_correlation(
                frames, video.audio, AUDIO_SAMPLE_RATE, settings.fps, _mouth_boxes(frames, detections))
            if self.syncnet is not None:
                self._sync(video, boxes, result)

        sampled = _sampled(len(frames), settings.sampled_frames)
        if self.face_analyzer is not None:
            if label.reference is None:
                result.notes.append("no reference portrait: identity similarity skipped")
            else:
                value, note = identity_similarity(self.face_analyzer, read_portrait(label.reference),
                                                  frames[sampled], [detections[i] for i in sampled])
                result.metrics["identity_similarity"] = value
                if note:
                    result.notes.append(f"identity: {note}")
        if self.emotion_classifier is not None:
            self._emotion(frames, sampled, boxes, plan.emotion, result)
        if truth_frames is not None:
            self._frechet(frames, truth_frames, result, pooled)
        elif self.inception is not None or self.i3d is not None:
            result.notes.append("no ground-truth video: FID/FVD skipped")
        return result

    def _sync(self, video: EvaluatedVideo, boxes, result: VideoResult) -> None:
        try:
            scores = sync_scores(self.syncnet, syncnet_face_crops(video.frames, boxes), video.audio, self.settings.vshift)
        except ValueError as error:
            result.notes.append(f"SyncNet: {error}")
            return
        result.metrics["sync_c"], result.metrics["sync_d"] = scores.confidence, scores.min_distance
        result.details["sync_offset"] = scores.offset

    def _emotion(self, frames, sampled, boxes, emotion: str | None, result: VideoResult) -> None:
        if emotion is None:
            result.notes.append("no emotion label or recognisable prompt: emotion accuracy skipped")
            return
        classifier = self.emotion_classifier
        if emotion not in classifier.classes:
            result.notes.append(f"the classifier has no class for {emotion!r}: emotion accuracy skipped")
            return
        crops = [face_crop(frames[i], None if boxes is None else boxes[i]) for i in sampled]
        predicted = classifier.classes[int(classifier.probabilities(crops).mean(axis=0).argmax())]
        result.details["requested_emotion"], result.details["predicted_emotion"] = emotion, predicted
        result.metrics["emotion_accuracy"] = float(predicted == emotion)

    def _frechet(self, frames: np.ndarray, truth_frames: np.ndarray, result: VideoResult, pooled: dict) -> None:
        """Features of the video and its ground truth, pooled for the set-level FID and FVD: a
        2048-d covariance from one video's frames (or a 400-d one from its few clips) is rank-poor,
        so per-video values would mislead and are left out."""
        if self.inception is not None:
            limit = self.settings.fid_frames
            generated = self.inception(frames[:limit] if limit else frames)
            real = self.inception(truth_frames[:limit] if limit else truth_frames)
            pooled["fid"][0].append(real)
            pooled["fid"][1].append(generated)
        if self.i3d is not None:
            generated_clips, real_clips = video_clips(frames), video_clips(truth_frames)
            if len(generated_clips) == 0 or len(real_clips) == 0:
                result.notes.append("shorter than one 16-frame clip: left out of FVD")
                return
            real, generated = self.i3d(real_clips), self.i3d(generated_clips)
            pooled["fvd"][0].append(real)
            pooled["fvd"][1].append(generated)

    # -- all videos --------------------------------------------------------------------------------

    def _summary(self, results: list[VideoResult], pooled: dict) -> dict:
        summary: dict = {"videos": len(results)}
        for name in METRIC_NAMES:
            if name in AVERAGED_METRICS:
                values = [r.metrics[name] for r in results if r.metrics[name] is not None]
                summary[name] = float(np.mean(values)) if values else None
            else:
                real, generated = pooled[name]
                summary[name] = frechet_distance(torch.cat(real), torch.cat(generated)) if real else None
        offsets = [r.details["sync_offset"] for r in results if r.details["sync_offset"] is not None]
        summary["mean_abs_sync_offset"] = float(np.mean(np.abs(offsets))) if offsets else None
        confusion: dict = {}
        for r in results:
            requested, predicted = r.details["requested_emotion"], r.details["predicted_emotion"]
            if requested is not None:
                row = confusion.setdefault(requested, {})
                row[predicted] = row.get(predicted, 0) + 1
        summary["emotion_confusion"] = confusion
        return summary

    def _report_notes(self, results: list[VideoResult], summary: dict) -> dict[str, str]:
        notes = dict(self.notes)
        for name in ("fid", "fvd"):
            if name not in notes:
                notes[name] = ("over all videos only (set-level statistic)" if summary[name] is not None else
                               "not measured: fewer than 2 frames/clips with ground truth (--ground-truth or labels)")
        return notes


@dataclass(frozen=True)
class VideoPlan:
    """One video to evaluate with what it was made for: its labels, its ground truth (resolved from
    the labels or the ground-truth folder) and the requested emotion (a preset name)."""

    path: Path
    labels: VideoLabels
    ground_truth: Path | None
    emotion: str | None


def plan_evaluation(videos: Iterable[str | Path], labels: Mapping[str, VideoLabels] | None = None,
                    ground_truth_folder: str | Path | None = None) -> list[VideoPlan]:
    """Resolve and check every per-video input (files exist, emotion labels known); decodes nothing."""
    labels = labels or {}
    plans = []
    for path in collect_videos(videos):
        label = labels_for(path, labels)
        truth = label.ground_truth
        if truth is None and ground_truth_folder is not None:
            truth = ground_truth_in_folder(path, Path(ground_truth_folder))
        for kind, file in (("ground truth", truth), ("reference portrait", label.reference)):
            if file is not None and not Path(file).is_file():
                raise FileNotFoundError(f"{path.name}: {kind} {file} does not exist")
        plans.append(VideoPlan(path, label, truth, requested_emotion(label.emotion, label.prompt)))
    return plans


def evaluate_videos(videos: Iterable[str | Path], weights: MetricWeights = MetricWeights(),
                    labels: Mapping[str, VideoLabels] | None = None, ground_truth_folder: str | Path | None = None,
                    settings: EvaluationSettings = EvaluationSettings(), progress: bool = True) -> EvaluationReport:
    """Evaluate generated videos (files or folders); see ``Evaluator`` and ``report.EvaluationReport``.

    The inputs are checked first, then the weight files, and only then are networks loaded.
    """
    plans = plan_evaluation(videos, labels, ground_truth_folder)
    return Evaluator(weights, settings).run(plans, progress)


def onnx_providers(device: torch.device) -> list[str] | None:
    """onnxruntime providers for ``device``: CUDA first when asked for and installed, else the CPU (None)."""
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return None


def _sampled(num_frames: int, count: int) -> np.ndarray:
    return sampled_indices(num_frames, count)


def _mouth_boxes(frames: np.ndarray, detections: list) -> list:
    """Mouth box per frame from the mouth-corner keypoints, else where the mouth sits in a face crop."""
    default = temporal.default_mouth_box(*frames.shape[1:3])
    return [default if face is None or face.keypoints is None
            else temporal.mouth_box_from_keypoints(face.keypoints[3], face.keypoints[4]) for face in detections]


def read_portrait(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of an image file (EXIF orientation applied, alpha over white)."""
    with Image.open(path) as image:
        return to_uint8(to_rgb_float(ImageOps.exif_transpose(image)))
