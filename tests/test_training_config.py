"""Training config files, stage plans and caption templates."""
from __future__ import annotations

from pathlib import Path

import pytest

from emocast_core.conditioning.emotion_presets import EMOTION_PRESETS
from emocast_core.training.captions import describe_emotion, emotion_captions, parse_mead_path
from emocast_core.training.config import ConfigError, TrainingConfig
from emocast_core.training.stages import STAGE_DEFAULTS, is_trainable, plan_stage

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "training"
STAGE_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("accelerate_"))


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: p.name)
def test_example_configs_parse(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainingConfig.from_file(path)
    assert Path(config.output_dir).is_absolute() and str(tmp_path) in config.output_dir
    assert config.stage.name in STAGE_DEFAULTS


def test_every_stage_has_an_example_config():
    names = {TrainingConfig.from_file(path).stage.name for path in STAGE_CONFIGS}
    assert names == set(STAGE_DEFAULTS)


def test_overrides_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: out\ndata: {root: data}\ntrain: {max_steps: 5}\n")
    config = TrainingConfig.from_file(path, overrides=["train.max_steps=7", "stage.name=lip_sync", "dropout.text=0.2"])
    assert (config.train.max_steps, config.stage.name, config.dropout.text) == (7, "lip_sync", 0.2)
    path.write_text("output_dir: out\ntrian: {max_steps: 5}\n")
    with pytest.raises(ConfigError, match="trian"):
        TrainingConfig.from_file(path)
    path.write_text("output_dir: out\ntrain: {max_step: 5}\n")
    with pytest.raises(ConfigError, match="max_step"):
        TrainingConfig.from_file(path)
    with pytest.raises(ConfigError, match="stage.name"):
        TrainingConfig.from_dict({"stage": {"name": "lips"}})
    with pytest.raises(ConfigError, match="dropout.audio"):
        TrainingConfig.from_dict({"dropout": {"audio": 1.5}})


def test_saved_config_round_trips(tmp_path):
    # A value off its default in every section, so a section or field lost on the way shows.
    config = TrainingConfig.from_dict({
        "output_dir": str(tmp_path), "seed": 7,
        "model": {"architecture": "sd15", "vae": str(tmp_path / "vae"), "init_net_strict": False},
        "data": {"root": str(tmp_path / "x"), "num_frames": 6, "caption_choice": "first"},
        "stage": {"name": "emotion", "frozen": ["imageproj.*"], "face_loss_weight": 2.5},
        "sampling": {"emotion_balance": 0.5, "reference_policy": "random"},
        "dropout": {"text": 0.2, "all": 0.1},
        "noise": {"noise_offset": 0.0, "min_snr_gamma": None},
        "optimizer": {"learning_rate": 3e-4, "lr_scheduler": "cosine"},
        "train": {"batch_size": 3, "mixed_precision": "bf16"},
        "ema": {"enabled": True, "decay": 0.99},
        "checkpoint": {"every": 50, "export_dtype": "bf16"},
        "validation": {"every": 100, "prompts": ["A person is talking with sad emotion."]},
    })
    default = TrainingConfig().to_dict()
    assert all(config.to_dict()[name] != default[name] for name in default)
    config.save(tmp_path / "saved.json")
    assert TrainingConfig.from_file(tmp_path / "saved.json").to_dict() == config.to_dict()


def test_stage_parameter_sets():
    appearance, motion, lip, emotion = (plan_stage(TrainingConfig.from_dict({"stage": {"name": n}}).stage)
                                        for n in ("appearance", "motion", "lip_sync", "emotion"))
    spatial = "denoising_unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"
    audio_emo = "denoising_unet.up_blocks.1.audio_modules.0.transformer_blocks.0.attn_audioemo.to_q.weight"
    motion_key = "denoising_unet.mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    text_k = "reference_unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight"
    check = lambda plan, key: is_trainable(key, plan.trainable, plan.frozen)  # noqa: E731
    assert check(appearance, spatial) and check(appearance, text_k) and check(appearance, "imageproj.proj.weight")
    assert not check(appearance, audio_emo) and not check(appearance, motion_key)
    assert check(motion, audio_emo) and check(motion, motion_key) and check(motion, "audioproj.proj1.weight")
    assert not check(motion, spatial) and not check(motion, "face_locator.conv_out.weight")
    assert check(lip, audio_emo) and not check(lip, motion_key) and lip.lip_loss_weight > 0
    assert check(emotion, audio_emo) and check(emotion, text_k) and not check(emotion, spatial)
    assert emotion.face_loss_weight > 0 and appearance.single_frame and not motion.single_frame


def test_caption_templates_follow_the_released_prompt_style():
    assert describe_emotion("happy", 2) == EMOTION_PRESETS["happy"] == "A person is talking with happy emotion."
    assert describe_emotion("Fear", 3) == "A person is talking with strong fearful emotion."
    assert describe_emotion("neutral", 3) == "A person is talking with neutral emotion."
    captions = emotion_captions("sad", 1, "clip/a.mp4")
    assert len(set(captions)) == 4 and all("slight sad emotion." in c for c in captions)
    assert captions == emotion_captions("sad", 1, "clip/a.mp4")
    # The first (used) sentence varies across clips, so the text does not tie one wording to the data.
    firsts = {emotion_captions("sad", 1, f"clip/{index}.mp4")[0] for index in range(20)}
    assert len(firsts) > 1
    assert all(sorted(emotion_captions("sad", 1, f"clip/{index}.mp4")) == sorted(captions) for index in range(20))
    with pytest.raises(ValueError):
        describe_emotion("unknown")


@pytest.mark.parametrize(
    "path, expected",
    [
        ("M003/video/front/happy/level_2/001.mp4", ("happy", 2, "M003")),
        ("MEAD/W015/video/left_30/disgusted/level_3/021.mp4", ("disgusted", 3, "W015")),
        ("clips/fear/level-1/x.mp4", ("fearful", 1, None)),
        ("vox/id0001/abc.mp4", None),
    ],
)
def test_mead_folder_convention(path, expected):
    label = parse_mead_path(Path(path))
    assert (label and (label.emotion, label.intensity, label.speaker)) == expected


def test_8bit_adam_is_optional_and_explains_what_is_missing(tmp_path, monkeypatch):
    import sys

    import torch

    from emocast_core.training.trainer import Trainer

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # absent, even where it is installed
    config = TrainingConfig.from_dict({"output_dir": str(tmp_path), "data": {"root": str(tmp_path)}, "optimizer": {"use_8bit_adam": True}})
    with pytest.raises(ImportError, match="bitsandbytes"):
        Trainer(config).build_optimizer([torch.nn.Parameter(torch.zeros(2))])
