"""Weight initialisation (SD1.5 + AnimateDiff), the training objective, condition dropout and
gradient checkpointing."""
from __future__ import annotations

import json

import pytest
import torch
from test_training_fixtures import single_thread, tiny_net_config  # noqa: F401  (fixture)

from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.net import EmoCASTNet
from emocast_core.training.config import DropoutSection, NoiseSection
from emocast_core.training.dropout import ConditionKeep, draw_condition_keep
from emocast_core.training.initialization import init_from_motion_module, init_from_sd15_unet, initialize_net
from emocast_core.training.model import EmoCASTTrainingModel, TrainingBatch
from emocast_core.training.objectives import (
    diffusion_loss,
    make_training_scheduler,
    min_snr_weights,
    noise_motion_frames,
    region_weight_map,
)
from emocast_core.training.trainer import apply_gradient_checkpointing

pytestmark = pytest.mark.usefixtures("single_thread")


def _diffusers_unet(config: EmoCASTConfig, device=None):
    from diffusers import UNet2DConditionModel

    unet = config.unet
    kwargs = dict(
        sample_size=unet.sample_size, in_channels=unet.in_channels, out_channels=unet.out_channels,
        block_out_channels=unet.block_out_channels, layers_per_block=unet.layers_per_block,
        down_block_types=unet.down_block_types, up_block_types=unet.up_block_types,
        attention_head_dim=unet.attention_head_dim, cross_attention_dim=unet.cross_attention_dim,
        norm_num_groups=unet.norm_num_groups,
    )
    if device == "meta":
        with torch.device("meta"):
            return UNet2DConditionModel(**kwargs)
    torch.manual_seed(3)
    return UNet2DConditionModel(**kwargs)


def test_sd15_unet_fills_both_unets_and_seeds_the_face_kv(tmp_path):
    config = tiny_net_config()
    _diffusers_unet(config).save_pretrained(tmp_path / "sd" / "unet")
    sd_state = _diffusers_unet(config).state_dict()
    torch.manual_seed(0)
    net = EmoCASTNet(config)
    summary = initialize_net(net, sd15_unet=str(tmp_path / "sd"))
    assert summary["sd15_unet"]["unused"] == []  # every SD tensor found a home
    ours = net.state_dict()
    for key, value in sd_state.items():
        assert torch.equal(ours[f"denoising_unet.{key}"], value), key
        if not key.startswith(("conv_norm_out", "conv_out")):
            assert torch.equal(ours[f"reference_unet.{key}"], value), key
    attn2 = net.denoising_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert torch.equal(attn2.processor.to_k_ip[0].weight, attn2.to_k.weight)
    assert torch.equal(attn2.processor.to_v_ip[0].weight, attn2.to_v.weight)


def test_full_size_sd15_and_animatediff_layouts_fit_the_released_shape(official_dir):
    """On the meta device: SD1.5's UNet keys fill our SD1.5-shaped net without leftovers, and a
    motion checkpoint with the released (AnimateDiff) motion-module key names and shapes loads."""
    net = EmoCASTNet.build(EmoCASTConfig.sd15(), device="meta")
    sd_config = json.loads((official_dir / "sd15_unet_config.json").read_text())
    assert tuple(sd_config["block_out_channels"]) == (320, 640, 1280, 1280)
    report = init_from_sd15_unet(net, _diffusers_unet(EmoCASTConfig.sd15(), device="meta").state_dict())
    assert report.unused == [] and report.loaded["reference_unet."] == 686 - 4  # SD minus its output head
    manifest = json.loads((official_dir / "emocast_net_manifest.json").read_text())["keys"]
    motion = {
        key.removeprefix("denoising_unet."): torch.empty(shape, device="meta")
        for key, shape in manifest.items() if ".motion_modules." in key
    }
    report = init_from_motion_module(net, motion)
    assert report.loaded["denoising_unet."] == len(motion)
    assert len({key.split(".temporal_transformer")[0] for key in motion}) == 21  # AnimateDiff v2: 21 modules


def test_motion_module_checkpoint_is_copied_and_a_foreign_one_refused():
    config = tiny_net_config()
    torch.manual_seed(1)
    source = EmoCASTNet(config).denoising_unet.state_dict()
    motion = {key: value for key, value in source.items() if ".motion_modules." in key}
    torch.manual_seed(2)
    net = EmoCASTNet(config)
    init_from_motion_module(net, motion)
    for key, value in motion.items():
        assert torch.equal(net.state_dict()[f"denoising_unet.{key}"], value)
    with pytest.raises(ValueError, match="does not fit"):
        init_from_motion_module(net, {**motion, "down_blocks.9.motion_modules.0.x.weight": torch.zeros(1)})


def test_min_snr_weights_for_v_prediction():
    scheduler = make_training_scheduler(NoiseSection())
    assert float(scheduler.alphas_cumprod[-1]) == 0.0  # zero terminal SNR
    t = torch.tensor([0, 300, 999])
    weights = min_snr_weights(scheduler, t, 5.0)
    alpha = scheduler.alphas_cumprod[t]
    snr_plus_one = alpha / (1 - alpha) + 1
    torch.testing.assert_close(weights, torch.minimum(snr_plus_one, torch.tensor(5.0)) / snr_plus_one)
    assert weights[2] == 1.0 and weights[0] < 0.01
    assert torch.equal(min_snr_weights(scheduler, t, None), torch.ones(3))


def test_motion_frame_noise_touches_only_the_kept_motion_frames():
    batch, motion = 3, 2
    latents = torch.randn(batch * (1 + motion), 4, 8, 8)
    noisy = torch.tensor([True, False, True])
    out = noise_motion_frames(latents, motion, 0.5, noisy, torch.Generator().manual_seed(0))
    grouped_in, grouped_out = latents.view(batch, 1 + motion, 4, 8, 8), out.view(batch, 1 + motion, 4, 8, 8)
    assert torch.equal(grouped_out[:, 0], grouped_in[:, 0])  # references stay exact
    assert torch.equal(grouped_out[1], grouped_in[1])  # motion frames that are the reference: untouched
    change = (grouped_out[[0, 2], 1:] - grouped_in[[0, 2], 1:]).std(dim=(1, 2, 3, 4))
    assert bool((change > 0).all()) and bool((change <= 0.5 * 1.1).all())
    assert noise_motion_frames(latents, motion, 0.0, noisy, torch.Generator()) is latents  # off: no draw


def test_region_weights_emphasise_the_lips_without_changing_the_loss_scale():
    lip = torch.zeros(1, 16)
    lip[0, 5] = 1.0
    weights = region_weight_map(lip, torch.zeros(1, 16), 3.0, 0.0, 2, 4, 4)
    assert weights.shape == (1, 1, 2, 4, 4) and weights.flatten()[5] == 4.0 and weights.flatten()[0] == 1.0
    target = torch.zeros(1, 4, 2, 4, 4)
    uniform = torch.ones_like(target)
    plain, _ = diffusion_loss(uniform, target, torch.ones(1))
    weighted, _ = diffusion_loss(uniform, target, torch.ones(1), weights)
    assert plain == pytest.approx(weighted.item())  # same error everywhere: same loss
    on_lips = torch.zeros_like(target)
    on_lips[..., 1, 1] = 1.0  # error only at the lip pixel (flat index 5)
    assert diffusion_loss(on_lips, target, torch.ones(1), weights)[0] > diffusion_loss(on_lips, target, torch.ones(1))[0]


def test_condition_dropout_rates_and_the_joint_branch():
    generator = torch.Generator().manual_seed(0)
    rates = dict(reference=0.1, face=0.2, audio=0.3, text=0.4)
    keep = draw_condition_keep(20000, DropoutSection(**rates, motion_frames=0.5, all=0.1), generator)
    # Each condition is dropped at its own rate, or with all the others (the joint branch, 0.1).
    # 20000 draws: the standard error of a rate is below 0.004, so 0.02 is five of them.
    for name, rate in rates.items():
        assert 1 - getattr(keep, name).float().mean() == pytest.approx(0.1 + 0.9 * rate, abs=0.02), name
    assert 1 - keep.motion_frames.float().mean() == pytest.approx(0.5, abs=0.02)
    joint = ~keep.face_locator
    assert joint.float().mean() == pytest.approx(0.1, abs=0.01)
    assert not (keep.reference | keep.face | keep.audio | keep.text)[joint].any()
    none = draw_condition_keep(5, DropoutSection(0, 0, 0, 0, 0, 0), generator)
    assert all(bool(value.all()) for value in vars(none).values())


def _tiny_batch(config: EmoCASTConfig, keep_reference: torch.Tensor, seed: int = 0) -> TrainingBatch:
    g = torch.Generator().manual_seed(seed)
    batch, frames, motion, side = 2, 2, 1, 8
    ones = torch.ones(batch, dtype=torch.bool)
    return TrainingBatch(
        noisy_latents=torch.randn(batch, 4, frames, side, side, generator=g),
        target=torch.randn(batch, 4, frames, side, side, generator=g),
        timesteps=torch.tensor([50, 800]),
        sample_weights=torch.ones(batch),
        reference_latents=torch.randn(batch * (1 + motion), 4, side, side, generator=g),
        text_tokens=torch.randn(batch, 77, config.token_dim, generator=g),
        face_embedding=torch.randn(batch, 512, generator=g),
        face_region=(torch.rand(batch, 3, 64, 64, generator=g) > 0.5).float(),
        audio_windows=torch.randn(batch, frames, 5, config.audio_layers, config.audio_channels, generator=g),
        region_masks=[[torch.rand(batch, 64, generator=g), torch.rand(batch, 16, generator=g)] for _ in range(3)],
        keep=ConditionKeep(keep_reference, ones, ones, ones, ones, ones),
    )


def test_gradient_checkpointing_keeps_results_and_key_names():
    config = tiny_net_config()
    torch.manual_seed(0)
    plain = EmoCASTNet(config)
    wrapped = EmoCASTNet(config)
    wrapped.load_state_dict(plain.state_dict())
    assert apply_gradient_checkpointing(wrapped) > 0
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    # A mixed batch: the second sample's reference is dropped (reference-free self-attention).
    batch = _tiny_batch(config, torch.tensor([True, False]))
    losses = []
    for net in (plain, wrapped):
        loss = EmoCASTTrainingModel(net, lip_loss_weight=1.0)(batch)["loss"]
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    grads = [dict((k.replace("_checkpoint_wrapped_module.", ""), p.grad) for k, p in net.named_parameters()) for net in (plain, wrapped)]
    key = "denoising_unet.up_blocks.1.audio_modules.0.transformer_blocks.0.zero_conv_lip.weight"
    torch.testing.assert_close(grads[0][key], grads[1][key])


def test_dropped_reference_changes_only_that_sample():
    config = tiny_net_config()
    torch.manual_seed(0)
    model = EmoCASTTrainingModel(EmoCASTNet(config))
    with torch.no_grad():
        both = model.predict(_tiny_batch(config, torch.tensor([True, True])))
        second_dropped = model.predict(_tiny_batch(config, torch.tensor([True, False])))
    torch.testing.assert_close(both[0], second_dropped[0])
    assert not torch.allclose(both[1], second_dropped[1])


def test_training_noise_schedule_is_the_samplers():
    from emocast_core.scheduling import make_scheduler
    from emocast_core.training.validation import make_validation_scheduler

    sampler = make_scheduler("ddim")
    assert dict(make_validation_scheduler(NoiseSection()).config) == dict(sampler.config)
    training = make_training_scheduler(NoiseSection())
    torch.testing.assert_close(training.alphas_cumprod, sampler.alphas_cumprod)
    assert training.config.prediction_type == "v_prediction"
