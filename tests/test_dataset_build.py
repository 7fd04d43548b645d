"""`dataset build`: videos -> index.jsonl + shards; skips, resuming, union masks, captions, loading."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_training_fixtures import blob_face_analyzer, single_thread, write_talking_video, write_tiny_models  # noqa: F401  (fixture)

from emocast_core.conditioning.audio import AudioEncoder
from emocast_core.conditioning.masks import FaceLandmarks, mask_levels
from emocast_core.training.captions import CaptionSource, read_caption_file, read_label_file
from emocast_core.training.dataset import ReferencePolicy, TalkingClipDataset, collate_samples, expression_descriptor
from emocast_core.training.dataset_builder import BuildOptions, DatasetBuilder, landmarks_from_tensors
from emocast_core.training.sampler import SampleKey
from emocast_core.training.shards import ShardReader, read_index, read_skipped
from emocast_core.training.union_masks import union_region_masks

SIZE = 64


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset_media")
    videos = root / "videos"
    write_talking_video(videos / "M001/video/front/happy/level_3/001.mp4", emotion="happy", seconds=1.6, fps=30, seed=1)
    write_talking_video(videos / "M001/video/front/neutral/level_1/001.mp4", emotion="neutral", seconds=1.6, fps=24, seed=2)
    write_talking_video(videos / "W002/video/front/sad/level_2/001.mp4", emotion="sad", seconds=1.2, fps=25, size=(128, 96), seed=3)
    write_talking_video(videos / "misc/no_audio.mp4", with_audio=False, seconds=1.2)
    write_talking_video(videos / "misc/no_face.mp4", with_face=False, seconds=1.2)
    write_talking_video(videos / "misc/short.mp4", seconds=0.6)
    return {"videos": videos, "models": write_tiny_models(root / "models"), "root": root}


pytestmark = pytest.mark.usefixtures("single_thread")


def make_builder(media, captions=None, **options):
    encoder = AudioEncoder.from_pretrained(media["models"]["wav2vec"])
    return DatasetBuilder(blob_face_analyzer(), encoder, captions or CaptionSource(), BuildOptions(size=SIZE, **options))


@pytest.fixture(scope="module")
def built(media):
    out = media["root"] / "built"
    report = make_builder(media).build(media["videos"], out)
    return out, report


def test_build_indexes_usable_videos_and_reports_the_rest(built):
    out, report = built
    records = {record.source: record for record in read_index(out)}
    assert set(records) == {
        "M001/video/front/happy/level_3/001.mp4", "M001/video/front/neutral/level_1/001.mp4", "W002/video/front/sad/level_2/001.mp4",
    }
    reasons = {row["source"]: row["reason"] for row in read_skipped(out)}
    assert reasons["misc/no_audio.mp4"].startswith("no audio")
    assert reasons["misc/no_face.mp4"].startswith("no face")
    assert reasons["misc/short.mp4"].startswith("too short")
    assert report.added_videos == 3 and len(report.skipped) == 3

    happy = records["M001/video/front/happy/level_3/001.mp4"]
    assert (happy.emotion, happy.intensity, happy.speaker) == ("happy", 3, "M001")
    assert "strong happy emotion" in happy.captions[0]
    # 1.6 s at 30, 24 or 25 fps all become 40 frames at 25 fps.
    assert happy.num_frames == 40 == records["M001/video/front/neutral/level_1/001.mp4"].num_frames
    assert records["W002/video/front/sad/level_2/001.mp4"].num_frames == 30


def test_stored_tensors_have_the_documented_shapes(built):
    out, _ = built
    reader = ShardReader(out)
    for record in read_index(out):
        frames = reader.frames(record, [0, record.num_frames - 1])
        assert frames.shape == (2, SIZE, SIZE, 3) and frames.dtype == np.uint8
        assert reader.tensor(record, "audio_features").shape == (record.num_frames, 2, 16)
        assert reader.tensor(record, "audio_waveform").shape[0] == pytest.approx(record.num_frames * 640, abs=640)
        assert reader.tensor(record, "face_embedding").shape == (512,)
        assert reader.tensor(record, "face_region").shape == (SIZE, SIZE)
        assert reader.tensor(record, "landmarks_lips").shape == (record.num_frames, 20, 2)
        # The crop is face-centred: the union face rectangle sits around the middle.
        ys, xs = np.nonzero(reader.tensor(record, "face_region").numpy())
        assert abs(xs.mean() - SIZE / 2) < SIZE / 6 and abs(ys.mean() - SIZE / 2) < SIZE / 6


def _upstream_union_masks(landmarks: list[FaceLandmarks], size: int):
    """Hallo's training-data masks (get_union_face_mask / get_union_lip_mask with expand 1, blur_mask,
    cv2.subtract, 255.0 - mask), written out independently of our implementation."""

    def expand_region(region, w, h, ratio):
        min_x, max_x, min_y, max_y = region
        mid_x, mid_y = (max_x + min_x) // 2, (max_y + min_y) // 2
        side_x, side_y = (max_x - min_x) * ratio, (max_y - min_y) * ratio
        min_x, max_x, min_y, max_y = mid_x - side_x // 2, mid_x + side_x // 2, mid_y - side_y // 2, mid_y + side_y // 2
        if min_x < 0:
            max_x -= min_x
            min_x = 0
        if max_x > w:
            min_x -= max_x - w
            max_x = w
        if min_y < 0:
            max_y -= min_y
            min_y = 0
        if max_y > h:
            min_y -= max_y - h
            max_y = h
        return round(min_x), round(max_x), round(min_y), round(max_y)

    def rect(points):
        lo, hi = np.round(points.min(0)), np.round(points.max(0))
        x0, x1, y0, y1 = expand_region([lo[0], hi[0], lo[1], hi[1]], size, size, 1)
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[round(y0):round(y1), round(x0):round(x1)] = 255
        return mask

    def union(masks):
        result = masks[0]
        for mask in masks[1:]:
            result = np.maximum(result, mask)
        rows, cols = np.any(result, axis=1), np.any(result, axis=0)
        y0, y1 = np.where(rows)[0][[0, -1]]
        x0, x1 = np.where(cols)[0][[0, -1]]
        result[y0:y1 + 1, x0:x1 + 1] = result.max()
        return result

    def blur(mask, kernel):
        return cv2.normalize(cv2.GaussianBlur(cv2.resize(mask, (64, 64)), (kernel, kernel), 0), None, 0, 255, cv2.NORM_MINMAX)

    face = union([rect(points.oval) for points in landmarks])
    lip = union([rect(points.lips) for points in landmarks])
    blur_face, blur_lip = blur(face, 51), blur(lip, 31)
    return face, (255.0 - blur_face).astype(np.uint8), cv2.subtract(blur_face, blur_lip), blur_lip


def test_union_masks_match_upstream_data_preparation():
    rng = np.random.default_rng(0)
    landmarks = []
    for _ in range(6):
        center = np.array([256, 250]) + rng.normal(0, 12, 2)
        oval = center + rng.normal(0, 1, (36, 2)) * [70, 90]
        lips = center + [0, 60] + rng.normal(0, 1, (20, 2)) * [25, 8]
        landmarks.append(FaceLandmarks(oval, lips))
    ours = union_region_masks(landmarks, 512)
    face, full, face_only, lip = _upstream_union_masks(landmarks, 512)
    np.testing.assert_array_equal(ours.face_region, (face > 0).astype(np.uint8))
    np.testing.assert_array_equal(ours.soft_full, full)
    np.testing.assert_array_equal(ours.soft_face, face_only)
    np.testing.assert_array_equal(ours.soft_lip, lip)
    # The union really is a union: it covers every frame's own face box.
    for points in landmarks:
        single = union_region_masks([points], 512).face_region
        assert np.all(ours.face_region >= single)


def test_stored_masks_are_the_union_over_the_clip_landmarks(built):
    out, _ = built
    reader = ShardReader(out)
    record = read_index(out)[0]
    landmarks = [p for p in landmarks_from_tensors(reader.tensor(record, "landmarks_oval"), reader.tensor(record, "landmarks_lips")) if p]
    expected = union_region_masks(landmarks, SIZE)
    np.testing.assert_array_equal(reader.tensor(record, "soft_lip").numpy(), expected.soft_lip)
    np.testing.assert_array_equal(reader.tensor(record, "face_region").numpy(), expected.face_region)


def test_resume_after_interruption_processes_each_video_once(media):
    out = media["root"] / "interrupted"
    calls = []

    class Interrupt(Exception):
        pass

    def captioner(video_path, label):
        calls.append(video_path.name)
        if len(calls) == 2:
            raise Interrupt
        return f"A person is talking about {video_path.parent.parent.name}."

    with pytest.raises(Interrupt):
        make_builder(media, CaptionSource(captioner=captioner), clips_per_shard=1).build(media["videos"], out)
    first = [record.source for record in read_index(out)]
    assert len(first) == 1
    report = make_builder(media, CaptionSource(captioner=captioner), clips_per_shard=1).build(media["videos"], out)
    sources = [record.source for record in read_index(out)]
    assert len(sources) == len(set(sources)) == 3
    assert report.already_done == 1 and len(report.skipped) == 3  # videos are visited in sorted order
    assert all(record.caption_source == "captioner" for record in read_index(out))
    # Every indexed clip's tensors are readable from its shard.
    reader = ShardReader(out)
    assert all(reader.tensor(record, "frame_offsets").shape[0] == record.num_frames + 1 for record in read_index(out))


def test_long_videos_are_cut_into_clips(media, tmp_path):
    import shutil

    videos = tmp_path / "videos"
    source = "M001/video/front/happy/level_3/001.mp4"
    (videos / source).parent.mkdir(parents=True)
    shutil.copy(media["videos"] / source, videos / source)
    make_builder(media, max_frames=25, min_frames=10).build(videos, tmp_path / "out")
    first, second = read_index(tmp_path / "out")
    assert (first.start_frame, first.num_frames, second.start_frame, second.num_frames) == (0, 25, 25, 15)
    assert first.id != second.id and first.source == second.source
    reader = ShardReader(tmp_path / "out")
    assert reader.tensor(second, "audio_features").shape[0] == 15


def test_caption_and_label_files_take_precedence(media, tmp_path):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"video": "W002/video/front/sad/level_2/001", "caption": "The portrait just lost a friend."}) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("video,emotion,intensity,speaker\nM001/video/front/happy/level_3/001.mp4,anger,level_1,actor_7\n")
    source = CaptionSource(captions=read_caption_file(captions), labels=read_label_file(labels))
    sad = Path("W002/video/front/sad/level_2/001.mp4")
    assert source.describe(sad, sad, source.label(sad)) == ["The portrait just lost a friend."]
    happy = Path("M001/video/front/happy/level_3/001.mp4")
    label = source.label(happy)
    assert (label.emotion, label.intensity, label.speaker) == ("angry", 1, "actor_7")
    assert "slight angry emotion" in source.describe(happy, happy, label)[0]


def test_dataset_cli_builds_with_onnx_face_models(media, tmp_path):
    """The command line path: real FaceAnalyzer.from_folder on tiny ONNX models, label file, info."""
    from face_fixtures import write_antelopev2

    from emocast_core.training.cli import main

    face = {"bbox": (30.0, 20.0, 70.0, 70.0), "keypoints": ((40, 38), (60, 38), (50, 48), (42, 58), (58, 58)), "score": 0.9}
    face_dir = write_antelopev2(tmp_path, [face], (96, 128))
    videos = tmp_path / "videos"
    write_talking_video(videos / "clip.mp4", seconds=1.2)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"clip": {"emotion": "surprise", "intensity": 2}}))
    out = tmp_path / "out"
    args = ["dataset", "build", "--videos", str(videos), "--out", str(out), "--face-models", str(face_dir),
            "--wav2vec", str(media["models"]["wav2vec"]), "--labels", str(labels), "--size", "64"]
    assert main(args) == 0
    (record,) = read_index(out)
    assert record.emotion == "surprised" and record.captions[0].endswith("surprised emotion.")
    assert main(["dataset", "info", str(out)]) == 0


# --- loading samples ---------------------------------------------------------------------------


def test_samples_hold_aligned_frames_audio_and_masks(built):
    out, _ = built
    dataset = TalkingClipDataset(out, num_frames=4, num_motion_frames=2, num_mask_levels=2,
                                 reference=ReferencePolicy("random", sample_margin=5))
    batch = collate_samples([dataset[SampleKey(0, 11)], dataset[SampleKey(1, 12)]])
    assert batch["pixel_values"].shape == (2, 4, 3, SIZE, SIZE)
    assert batch["reference_pixel_values"].shape == (2, 3, 3, SIZE, SIZE)
    assert batch["audio_windows"].shape == (2, 4, 5, 2, 16)
    assert [m.shape for m in batch["lip_mask"]] == [(2, 64), (2, 16)]
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1

    # Same seed, same sample; the window centre is the target frame's own feature row.
    sample, again = dataset[SampleKey(0, 11)], dataset[SampleKey(0, 11)]
    assert torch.equal(sample["pixel_values"], again["pixel_values"]) and sample["caption"] == again["caption"]
    record = dataset.records[0]
    start = dataset.choose_frames(0, np.random.default_rng(11))["start"]
    features = dataset.reader.tensor(record, "audio_features").float()
    assert torch.equal(sample["audio_windows"][:, 2], features[start:start + 4])
    frames = torch.from_numpy(dataset.reader.frames(record, [start - 1])).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(sample["reference_pixel_values"][2], frames[0])  # the motion frame just before the targets
    levels = mask_levels(dataset.reader.tensor(record, "soft_lip").numpy(), SIZE)
    assert torch.equal(sample["lip_mask"][1], torch.from_numpy(levels[1].reshape(-1)))


def test_reference_frames_differ_in_expression_from_the_targets(built):
    out, _ = built
    random_policy = TalkingClipDataset(out, 4, 2, ReferencePolicy("random", sample_margin=3))
    aware = TalkingClipDataset(out, 4, 2, ReferencePolicy("different_expression", cross_clip_probability=0.0,
                                                           expression_quantile=0.25, sample_margin=3))

    def mean_distance(dataset):
        distances = []
        for seed in range(60):
            rng = np.random.default_rng(seed)
            choice = dataset.choose_frames(0, rng)
            descriptors = dataset.descriptors(dataset.records[0])
            target = descriptors[choice["start"]:choice["start"] + 4].mean(axis=0)
            distances.append(np.linalg.norm(descriptors[choice["reference_frame"]] - target))
            assert min(abs(choice["reference_frame"] - t) for t in range(choice["start"], choice["start"] + 4)) >= 3
        return np.mean(distances)

    assert mean_distance(aware) > 1.3 * mean_distance(random_policy)


def test_cross_clip_references_come_from_the_same_speaker_with_another_emotion(built, media, tmp_path):
    out, _ = built
    dataset = TalkingClipDataset(out, 4, 2, ReferencePolicy("different_expression", cross_clip_probability=1.0))
    happy = next(i for i, r in enumerate(dataset.records) if r.emotion == "happy")
    sad = next(i for i, r in enumerate(dataset.records) if r.emotion == "sad")
    choices = [dataset.choose_frames(happy, np.random.default_rng(seed)) for seed in range(10)]
    assert {dataset.records[c["reference_clip"]].source for c in choices} == {"M001/video/front/neutral/level_1/001.mp4"}
    # W002 has no other clip: the reference falls back to the clip itself.
    assert dataset.choose_frames(sad, np.random.default_rng(0))["reference_clip"] == sad

    # Cut into halves, M001's happy video gives a second happy clip of the same speaker: it is never
    # the reference of the first one, only the neutral halves are.
    import shutil

    videos = tmp_path / "videos"
    for source in ("M001/video/front/happy/level_3/001.mp4", "M001/video/front/neutral/level_1/001.mp4"):
        (videos / source).parent.mkdir(parents=True)
        shutil.copy(media["videos"] / source, videos / source)
    make_builder(media, max_frames=20, min_frames=10).build(videos, tmp_path / "halves")
    halves = TalkingClipDataset(tmp_path / "halves", 4, 2, ReferencePolicy("different_expression", cross_clip_probability=1.0, sample_margin=3))
    assert sorted(r.emotion for r in halves.records) == ["happy", "happy", "neutral", "neutral"]
    first_happy = next(i for i, r in enumerate(halves.records) if r.emotion == "happy")
    references = {halves.choose_frames(first_happy, np.random.default_rng(seed))["reference_clip"] for seed in range(20)}
    assert {halves.records[i].emotion for i in references} == {"neutral"} and len(references) == 2


def test_expression_descriptor_ignores_position_and_scale():
    rng = np.random.default_rng(0)
    oval, lips = rng.normal(size=(36, 2)), rng.normal(size=(20, 2))
    moved = expression_descriptor(oval * 3 + 7, lips * 3 + 7)
    np.testing.assert_allclose(expression_descriptor(oval, lips), moved, atol=1e-9)
    opened = lips.copy()
    opened[:, 1] *= 2
    assert np.linalg.norm(expression_descriptor(oval, opened) - expression_descriptor(oval, lips)) > 0.1
