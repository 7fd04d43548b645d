"""`python -m emocast_research evaluate`: every metric on small inputs with known answers, with stand-in
networks saved in the real weight-file layouts (random weights) where a metric needs a network."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from emocast_core.cli import main as runtime_main
from emocast_core.video import write_video as write_mp4
from emocast_research.cli import main
from emocast_research.evaluation import (
    EvaluationSettings,
    MetricWeights,
    VideoLabels,
    evaluate_videos,
    read_labels_file,
)
from emocast_research.evaluation.emotion import CLASSES_8, requested_emotion
from emocast_research.evaluation.frechet import frechet_distance
from emocast_research.evaluation.syncnet import (
    SyncNet,
    offset_search,
    sync_scores,
    syncnet_face_crops,
)
from emocast_research.evaluation.temporal import (
    clip_border_pairs,
    mouth_audio_correlation,
    seam_ratio,
)

FPS = 25
RATE = 16000
SAMPLES_PER_FRAME = RATE // FPS
HAS_CDFVD = importlib.util.find_spec("cdfvd") is not None


def write_video(path, frames, fps, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(path, frames, fps, **options)


def drifting_video(num_frames: int, size: int = 32, jump_every: int | None = None, jump: float = 30.0) -> np.ndarray:
    """Frames whose brightness rises 1 level per frame, plus `jump` levels at every `jump_every`-th frame."""
    levels = np.arange(num_frames, dtype=np.float64) + 60.0
    if jump_every:
        levels += jump * (np.arange(num_frames) // jump_every)
    return np.broadcast_to(np.clip(levels, 0, 255).astype(np.uint8)[:, None, None, None], (num_frames, size, size, 3)).copy()


def talking_video(pattern: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A grey face whose mouth box is dark when `pattern` is 1, and speech-like noise loud when it is 1."""
    frames = np.full((len(pattern), size, size, 3), 170, dtype=np.uint8)
    y0, y1, x0, x1 = int(0.66 * size), int(0.8 * size), int(0.4 * size), int(0.6 * size)
    frames[pattern.astype(bool), y0:y1, x0:x1] = 30
    rng = np.random.default_rng(1)
    amplitude = np.repeat(0.02 + 0.5 * pattern, SAMPLES_PER_FRAME)
    return frames, (rng.uniform(-1, 1, amplitude.size) * amplitude).astype(np.float32)


# --- temporal measures -------------------------------------------------------------------------------


def test_seam_ratio_sees_a_jump_at_every_clip_border():
    frames = drifting_video(40, jump_every=8)
    # Inside clips the frames change by 1 level, across each border by 1 + 30.
    assert seam_ratio(frames, clip_length=8) == pytest.approx(31.0, rel=1e-6)
    assert seam_ratio(drifting_video(40), clip_length=8) == pytest.approx(1.0, rel=1e-6)
    # The same jumps measured with the wrong clip length fall inside clips.
    assert seam_ratio(frames, clip_length=10) < 1.0
    assert seam_ratio(frames[:8], clip_length=8) is None  # one clip: no border to measure


def test_clip_borders_follow_the_pipeline_clip_starts_with_overlap():
    # stride 6: clips start at 0, 6, 12; two cross-faded frames after each start are border too.
    assert clip_border_pairs(18, clip_length=8, overlap=2).tolist() == [5, 6, 7, 11, 12, 13]


def test_frozen_frame_has_zero_mouth_audio_correlation():
    pattern = (np.random.default_rng(0).uniform(size=50) > 0.5).astype(np.float64)
    frames, audio = talking_video(pattern)
    assert mouth_audio_correlation(frames, audio, RATE, FPS) > 0.95
    frozen = np.repeat(frames[:1], len(frames), axis=0)
    assert mouth_audio_correlation(frozen, audio, RATE, FPS) == 0.0
    assert mouth_audio_correlation(frames[::-1].copy(), audio, RATE, FPS) < 0.5


# --- SyncNet -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0, 3, -4])
def test_offset_search_finds_the_shift_between_lip_and_audio_features(shift):
    generator = torch.Generator().manual_seed(0)
    lips = torch.randn(60, 32, generator=generator)
    # The audio window m matches the lips of window m + shift: the audio runs `shift` frames ahead.
    audio = torch.roll(lips, -shift, dims=0)
    scores = offset_search(lips, audio, vshift=15)
    assert scores.offset == shift
    assert scores.mean_distances.shape == (31,)
    assert scores.min_distance == pytest.approx(float(scores.mean_distances.min()))
    assert scores.confidence > 1.0  # far from the median distance of the wrong shifts


class BrightnessLoudnessNet(nn.Module):
    """A stand-in SyncNet with known behaviour: the lip feature of a 5-frame window is its brightness
    profile, the audio feature of a 20-step MFCC window its log-energy profile (4 steps per frame)."""

    @staticmethod
    def _normalised(profile: torch.Tensor) -> torch.Tensor:
        profile = profile - profile.mean(dim=1, keepdim=True)
        return profile / (profile.norm(dim=1, keepdim=True) + 1e-3)

    def embed_lips(self, lips: torch.Tensor) -> torch.Tensor:  # (N, 3, 5, 224, 224)
        return self._normalised(-lips.mean(dim=(1, 3, 4)))  # dark mouth = loud

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:  # (N, 1, 13, 20); row 0 is the log energy
        return self._normalised(mfcc[:, 0, 0].reshape(-1, 5, 4).mean(dim=2))


@pytest.mark.parametrize("shift", [0, 2, -3])
def test_audio_shifted_by_k_frames_gives_sync_offset_k(shift):
    pytest.importorskip("python_speech_features")
    pattern = (np.random.default_rng(3).uniform(size=70) > 0.5).astype(np.float64)
    frames, audio = talking_video(pattern, size=224)
    # Audio ahead by k frames: drop its first k frames (or delay it for negative k).
    shifted = np.roll(audio, -shift * SAMPLES_PER_FRAME)
    crops = syncnet_face_crops(frames, None)
    scores = sync_scores(BrightnessLoudnessNet(), crops, shifted, vshift=8)
    assert scores.offset == shift
    assert scores.confidence > 0.3


def test_syncnet_weights_load_in_the_syncnet_v2_layout(tmp_path):
    torch.manual_seed(0)
    reference = SyncNet()
    state = reference.state_dict()
    # Names and shapes of the released syncnet_v2.model.
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert state["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert state["netfcaud.3.weight"].shape == (1024, 512)
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = SyncNet.from_file(tmp_path / "syncnet_v2.model")
    lips = torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        assert torch.allclose(loaded.embed_lips(lips), reference.eval().embed_lips(lips))
        assert loaded.embed_audio(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a SyncNet"):
        SyncNet.from_file(tmp_path / "other.pt")


def test_sync_scores_with_a_stand_in_syncnet_and_face_detector(tmp_path):
    """The whole Sync-C/Sync-D path on an MP4: detector boxes -> smoothed crops -> a randomly
    initialised standard SyncNet -> scores in the reference's ranges."""
    pytest.importorskip("python_speech_features")
    pytest.importorskip("onnx")
    from face_fixtures import write_antelopev2

    size = 128
    face = {"bbox": (34.0, 24.0, 94.0, 104.0), "score": 0.9,
            "keypoints": ((50.0, 55.0), (78.0, 55.0), (64.0, 70.0), (52.0, 88.0), (76.0, 88.0))}
    folder = write_antelopev2(tmp_path, [face], (size, size), with_landmarker=False)
    pattern = (np.random.default_rng(0).uniform(size=12) > 0.5).astype(np.float64)
    frames, audio = talking_video(pattern, size=size)
    write_video(tmp_path / "videos" / "talk.mp4", frames, FPS, audio=(audio, RATE))
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), tmp_path / "syncnet_v2.model")
    weights = MetricWeights(syncnet=tmp_path / "syncnet_v2.model", face_models=folder)
    report = evaluate_videos([tmp_path / "videos"], weights, progress=False)
    video = report.videos[0]
    assert video.metrics["sync_d"] > 0 and video.metrics["sync_c"] >= 0
    assert -15 <= video.details["sync_offset"] <= 15
    assert report.summary["sync_c"] == pytest.approx(video.metrics["sync_c"])
    assert video.metrics["identity_similarity"] is None and any("reference" in note for note in video.notes)


def test_syncnet_crop_follows_the_reference_geometry():
    frames = np.zeros((20, 200, 300, 3), dtype=np.uint8)
    frames[:, 80:120, 130:170] = (0, 0, 255)  # blue square = the face box, in RGB
    boxes = np.tile([130.0, 80.0, 170.0, 120.0], (20, 1))
    crops = syncnet_face_crops(frames, boxes)
    assert crops.shape == (20, 224, 224, 3)
    # Half-size 20, crop scale 0.4: the crop spans y 80..136 (from the box top to well below the chin)
    # and x 122..178, so the box fills rows 0..40/56 and columns 8/56..48/56 of it; blue is channel 0 in BGR.
    rows = np.nonzero(crops[0, :, 112, 0] > 128)[0]
    columns = np.nonzero(crops[0, 60, :, 0] > 128)[0]
    assert rows.min() == 0 and rows.max() == pytest.approx(224 * 40 / 56, abs=3)
    assert columns.min() == pytest.approx(224 * 8 / 56, abs=3) and columns.max() == pytest.approx(224 * 48 / 56, abs=3)
    assert crops[0, 60, 112].tolist() == [255, 0, 0]


# --- Fréchet distances -------------------------------------------------------------------------------


def test_frechet_distance_of_known_gaussians():
    pytest.importorskip("torchmetrics")
    # 1-D: means 1 and 5, variances 2 and 8 -> (5 - 1)^2 + 2 + 8 - 2 * sqrt(2 * 8) = 18.
    real = torch.tensor([[0.0], [2.0]])
    fake = torch.tensor([[3.0], [7.0]])
    assert frechet_distance(real, fake) == pytest.approx(18.0, rel=1e-9)
    # Uncorrelated dimensions add up: means (1, 0) and (5, 3), variances (4/3, 4/3) and (16/3, 4/3)
    # -> 16 + 9 + (4/3 + 16/3 - 2 * 8/3) + 0.
    real2 = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, -1.0], [2.0, -1.0]])
    fake2 = torch.tensor([[3.0, 4.0], [7.0, 4.0], [3.0, 2.0], [7.0, 2.0]])
    assert frechet_distance(real2, fake2) == pytest.approx(25.0 + 4.0 / 3.0, rel=1e-9)
    assert frechet_distance(real2, real2) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(real[:1], fake) is None


def test_frechet_distance_agrees_with_the_scipy_matrix_square_root_formula():
    """The formula clean-fid and the TF FID code use: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    pytest.importorskip("torchmetrics")
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    real = rng.standard_normal((60, 8)) @ rng.standard_normal((8, 8))
    fake = rng.standard_normal((50, 8)) @ rng.standard_normal((8, 8)) + 0.5
    mean_real, mean_fake = real.mean(0), fake.mean(0)
    cov_real, cov_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy_linalg.sqrtm(cov_real @ cov_fake).real
    expected = ((mean_real - mean_fake) ** 2).sum() + np.trace(cov_real + cov_fake - 2 * root)
    assert frechet_distance(torch.from_numpy(real), torch.from_numpy(fake)) == pytest.approx(expected, rel=1e-6)


class TinyInception(nn.Module):
    """Stand-in for inception-2015-12-05.pt with its TorchScript call: uint8 NCHW in, resized to 299
    inside, pooled features out when ``return_features``. It gives 64 features instead of 2048 so
    that the float64 eigen-decomposition of the statistics takes milliseconds on 2 cores."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(), nn.Conv2d(16, 64, 5, stride=4),
                                    nn.AdaptiveAvgPool2d(1))
        self.output = nn.Linear(64, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = nn.functional.interpolate(img.float(), size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128.0) / 128.0).flatten(1)
        return features if return_features else self.output(features)


def write_tiny_inception(path):
    torch.manual_seed(0)
    torch.jit.script(TinyInception().eval()).save(str(path))
    return path


def noisy_video(num_frames: int, seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_fid_is_zero_for_identical_videos_and_grows_with_difference(tmp_path):
    pytest.importorskip("torchmetrics")
    generated, truth = tmp_path / "generated", tmp_path / "truth"
    for name, seed in (("a.mp4", 0), ("b.mp4", 1)):
        write_video(generated / name, noisy_video(12, seed), FPS)
        write_video(truth / name, noisy_video(12, seed), FPS)
    weights = MetricWeights(inception=write_tiny_inception(tmp_path / "inception-2015-12-05.pt"))
    report = evaluate_videos([generated], weights, ground_truth_folder=truth, progress=False)
    # Same frames, same network: the statistics match to float64 rounding.
    assert abs(report.summary["fid"]) < 1e-6
    assert all(video.metrics["fid"] is None for video in report.videos)  # set-level only
    assert report.summary["fvd"] is None and "I3D" in report.notes["fvd"]
    write_video(truth / "b.mp4", noisy_video(12, seed=2) // 2, FPS)  # darker, other content
    assert evaluate_videos([generated], weights, ground_truth_folder=truth, progress=False).summary["fid"] > 1e-3


@pytest.mark.slow
def test_fvd_with_a_stand_in_i3d(tmp_path):
    generated, truth = tmp_path / "generated", tmp_path / "truth"
    video = noisy_video(32, seed=0, size=32)
    write_video(generated / "a.mp4", video, FPS)
    write_video(truth / "a.mp4", video, FPS)
    i3d_file = tmp_path / "i3d_pretrained_400.pt"
    if not HAS_CDFVD:
        torch.save({}, i3d_file)
        with pytest.raises(ImportError, match="cd-fvd"):
            evaluate_videos([generated], MetricWeights(i3d=i3d_file), ground_truth_folder=truth, progress=False)
        return
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    torch.manual_seed(0)
    torch.save(InceptionI3d(400, in_channels=3).state_dict(), i3d_file)  # the layout cd-fvd loads
    report = evaluate_videos([generated], MetricWeights(i3d=i3d_file), ground_truth_folder=truth, progress=False)
    # Two 16-frame clips on each side; identical clips give FVD 0 (400-d logits, float64 statistics).
    assert report.summary["fvd"] == pytest.approx(0.0, abs=1e-3)


# --- identity and emotion ----------------------------------------------------------------------------


def save_emotion_classifier(path, weights: np.ndarray):
    """Stand-in HSEmotion ONNX: input 'input' (N, 3, 224, 224) -> 8 logits = channel means @ weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["means4"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["means4", "weights"], ["logits"])],
        "emotion_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_emotion_accuracy_and_confusion_against_the_requested_emotion(tmp_path):
    pytest.importorskip("onnx")
    # Red frames read as happy, blue frames as sad (ImageNet-normalised channel means drive the logits).
    weights = np.zeros((3, 8))
    weights[0, CLASSES_8.index("happy")] = 5.0
    weights[2, CLASSES_8.index("sad")] = 5.0
    model = save_emotion_classifier(tmp_path / "enet_b0_8_best_afew.onnx", weights)
    red = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 250
    blue = np.zeros((10, 32, 32, 3), dtype=np.uint8)
    blue[..., 2] = 250
    folder = tmp_path / "videos"
    for name, frames in (("joy.mp4", red), ("grief.mp4", blue), ("rage.mp4", blue)):
        write_video(folder / name, frames, FPS)
    labels = {"joy": VideoLabels(emotion="happy"), "grief.mp4": VideoLabels(prompt="A person is talking with sad emotion."),
              "rage": VideoLabels(emotion="anger")}
    report = evaluate_videos([folder], MetricWeights(emotion_classifier=model), labels, progress=False)
    by_name = {video.path.stem: video for video in report.videos}
    assert by_name["joy"].metrics["emotion_accuracy"] == 1.0
    assert by_name["grief"].metrics["emotion_accuracy"] == 1.0
    assert by_name["rage"].metrics["emotion_accuracy"] == 0.0
    assert by_name["rage"].details["predicted_emotion"] == "sad"
    assert report.summary["emotion_accuracy"] == pytest.approx(2 / 3)
    assert report.summary["emotion_confusion"] == {"happy": {"happy": 1}, "sad": {"sad": 1}, "angry": {"sad": 1}}


def test_requested_emotion_from_labels_and_prompts():
    assert requested_emotion("Happiness", None) == "happy"
    assert requested_emotion(None, "The person speaks with anger and raised brows") == "angry"
    assert requested_emotion(None, "happy at first, then sad") is None  # two emotions: no guess
    with pytest.raises(ValueError, match="unknown emotion label"):
        requested_emotion("elated", None)


def test_identity_similarity_with_the_project_face_models(tmp_path):
    pytest.importorskip("onnx")
    from face_fixtures import write_antelopev2
    from PIL import Image

    size = 128
    face = {"bbox": (34.0, 24.0, 94.0, 104.0), "score": 0.9,
            "keypoints": ((50.0, 55.0), (78.0, 55.0), (64.0, 70.0), (52.0, 88.0), (76.0, 88.0))}
    folder = write_antelopev2(tmp_path, [face], (size, size), with_landmarker=False)
    # The stand-in ArcFace maps colour means to 512 values: a red-faced and a blue-faced person differ.
    noise = np.random.default_rng(0).integers(0, 40, (size, size, 3))
    portrait = (noise + [200, 40, 40]).astype(np.uint8)
    Image.fromarray(portrait).save(tmp_path / "me.png")
    Image.fromarray((noise + [40, 40, 200]).astype(np.uint8)).save(tmp_path / "someone_else.png")
    write_video(tmp_path / "videos" / "me.mp4", np.repeat(portrait[None], 6, axis=0), FPS, crf=0)
    labels = {"me": VideoLabels(reference=tmp_path / "me.png")}
    report = evaluate_videos([tmp_path / "videos"], MetricWeights(face_models=folder.parent.parent), labels, progress=False)
    assert report.videos[0].metrics["identity_similarity"] > 0.98
    labels = {"me": VideoLabels(reference=tmp_path / "someone_else.png")}
    report = evaluate_videos([tmp_path / "videos"], MetricWeights(face_models=folder), labels, progress=False)
    assert report.videos[0].metrics["identity_similarity"] < 0.9


# --- the command -------------------------------------------------------------------------------------


def test_evaluate_command_writes_json_and_csv_and_notes_skipped_metrics(tmp_path, capsys):
    pattern = (np.random.default_rng(0).uniform(size=48) > 0.5).astype(np.float64)
    frames, audio = talking_video(pattern)
    folder = tmp_path / "generated"
    write_video(folder / "talk.mp4", frames, FPS, audio=(audio, RATE))
    write_video(folder / "seams.mp4", drifting_video(48, size=64, jump_every=16), FPS)
    labels = tmp_path / "labels.csv"
    labels.write_text("video,emotion,prompt\ntalk.mp4,happy,\nseams,,A person is talking with sad emotion.\n")
    out_json, out_csv = tmp_path / "out" / "metrics.json", tmp_path / "out" / "metrics.csv"
    code = main(["evaluate", str(folder), "--labels", str(labels), "--json", str(out_json), "--csv", str(out_csv),
                 "--no-progress"])
    assert code == 0
    data = json.loads(out_json.read_text())
    assert set(data) >= {"videos", "summary"}
    videos = {Path_name(v["path"]): v for v in data["videos"]}
    for video in videos.values():
        assert {"sync_c", "sync_d", "fid", "fvd", "identity_similarity", "emotion_accuracy", "seam_ratio",
                "mouth_audio_correlation"} <= set(video)
    assert videos["talk.mp4"]["mouth_audio_correlation"] > 0.9
    assert videos["seams.mp4"]["mouth_audio_correlation"] is None  # no audio track
    assert videos["seams.mp4"]["seam_ratio"] > 10  # a jump every 16 frames (the default clip length)
    assert data["videos"][0]["sync_c"] is None and "SyncNet" in data["notes"]["sync_c"]
    with out_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows][-1] == "ALL" and len(rows) == 3
    assert float(rows[-1]["seam_ratio"]) == pytest.approx(data["summary"]["seam_ratio"], rel=1e-5)
    table = capsys.readouterr().out
    assert "seams.mp4" in table and "ALL" in table and "skipped" in table


def Path_name(path: str) -> str:
    from pathlib import Path

    return Path(path).name


def test_evaluate_command_refuses_bad_input_before_any_work(tmp_path, capsys):
    folder = tmp_path / "generated"
    write_video(folder / "a.mp4", drifting_video(8), FPS)
    out_json = tmp_path / "metrics.json"
    code = main(["evaluate", str(folder), "--syncnet", str(tmp_path / "missing.model"), "--json", str(out_json),
                 "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and not out_json.exists()
    assert error.count("\n") == 0 and "missing.model" in error
    assert main(["evaluate", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "no such video file or folder" in capsys.readouterr().err
    # The runtime's command line points at the command's new home.
    assert runtime_main(["--debug", "evaluate", str(folder), "--no-progress"]) == 2
    assert "python -m emocast_research evaluate" in capsys.readouterr().err
    bad_labels = tmp_path / "labels.csv"
    bad_labels.write_text("video,mood\na.mp4,happy\n")
    assert main(["evaluate", str(folder), "--labels", str(bad_labels), "--no-progress"]) == 2
    assert "unknown column(s) mood" in capsys.readouterr().err


def test_labels_file_json_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "labels.json"
    path.write_text(json.dumps({"a.mp4": {"emotion": "sad", "reference": "a.png", "ground_truth": "../real/a.mp4"}}))
    labels = read_labels_file(path)
    assert labels["a.mp4"].emotion == "sad"
    assert labels["a.mp4"].reference == tmp_path / "sub" / "a.png"
    assert labels["a.mp4"].ground_truth == tmp_path / "sub" / ".." / "real" / "a.mp4"
    with pytest.raises(FileNotFoundError, match="ground truth"):
        evaluate_videos([write_video(tmp_path / "a.mp4", drifting_video(4), FPS)], labels=labels, progress=False)


def test_an_unreadable_video_costs_its_row_not_the_run(tmp_path):
    folder = tmp_path / "generated"
    write_video(folder / "good.mp4", drifting_video(24, jump_every=8), FPS)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    report = evaluate_videos([folder], settings=EvaluationSettings(clip_length=8), progress=False)
    rows = {video.path.name: video for video in report.videos}
    assert rows["good.mp4"].metrics["seam_ratio"] > 10
    assert rows["broken.mp4"].metrics["seam_ratio"] is None
    assert rows["broken.mp4"].notes[0].startswith("not evaluated")
    assert report.summary["seam_ratio"] == pytest.approx(rows["good.mp4"].metrics["seam_ratio"])


def test_videos_are_read_at_25_fps_by_nearest_frame():
    from emocast_research.evaluation.media import resample_frames

    frames = np.arange(60, dtype=np.uint8)[:, None, None, None]  # frame k shows value k
    assert resample_frames(frames, 50.0, 25.0)[:, 0, 0, 0].tolist() == list(range(0, 60, 2))
    at_30 = resample_frames(frames[:30], 30.0, 25.0)[:, 0, 0, 0]  # one second
    assert len(at_30) == 25 and at_30[0] == 0 and at_30[-1] == 29
    assert np.all(np.abs(at_30 / 30.0 - np.arange(25) / 25.0) <= 0.5 / 30.0 + 1e-9)  # nearest in time


def test_settings_refuse_bad_clip_layout():
    with pytest.raises(ValueError, match="overlap"):
        EvaluationSettings(clip_length=8, overlap=8)
