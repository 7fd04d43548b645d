"""`Trainer`: one stage of EmoCAST training on Hugging Face accelerate.

The same code runs on one GPU, several GPUs and several machines (`accelerate launch`), with
DeepSpeed or FSDP through accelerate's own configs, in fp32/fp16/bf16, with gradient accumulation,
gradient checkpointing, optional 8-bit Adam and EMA.

Reproducibility and resuming: every random draw of a step (noise, timesteps, condition dropout, VAE
posterior samples) comes from a generator seeded by (seed, step, micro-step, process), and every
sample's frames from the sampler's per-position seed (`sampler.py`). A run resumed from a
checkpoint therefore sees exactly the data and noise that the uninterrupted run would have seen.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from ..devices import DTYPE_NAMES
from ..models.config import EmoCASTConfig
from ..conditioning.masks import masks_for_latent_grid
from ..models.net import EmoCASTNet
from .checkpoints import (
    EXPORT_FOLDER,
    checkpoint_dir,
    export_net,
    export_state_dict,
    find_resume_checkpoint,
    mark_complete,
    prune_checkpoints,
    read_trainer_state,
    write_trainer_state,
)
from .config import TrainingConfig
from .dataset import ReferencePolicy, TalkingClipDataset, collate_samples
from .dropout import draw_condition_keep
from .ema import EMAWeights
from .initialization import initialize_net
from .model import EmoCASTTrainingModel, TrainingBatch
from .objectives import make_training_scheduler, min_snr_weights, noise_motion_frames, sample_noise, sample_timesteps
from .rank_log import RankLog
from .sampler import EmotionBalancedSampler, mix_seed
from .stages import StagePlan, apply_stage, plan_stage, unreachable_parameter_names

logger = logging.getLogger(__name__)

# Frames per VAE call; bounds the encoder's activation memory for long clips.
VAE_CHUNK = 16
# Distinct captions whose CLIP embeddings are kept.
TEXT_CACHE_SIZE = 4096


def resolve_architecture(architecture) -> EmoCASTConfig:
    """model.architecture -> EmoCASTConfig (see `ModelSection`)."""
    from ..loading import read_config_file

    if isinstance(architecture, dict):
        return EmoCASTConfig.from_dict(architecture)
    if architecture == "sd15":
        return EmoCASTConfig.sd15()
    return read_config_file(architecture)


def apply_gradient_checkpointing(net: EmoCASTNet) -> int:
    """Recompute the activations of every transformer, audio/motion module and resnet in the
    backward pass. Uses torch's checkpoint wrapper, whose state-dict hooks keep the key names
    (the exported `net.pth` is unchanged). Returns the number of wrapped modules."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    from ..models.layers import ResnetBlock
    from ..models.motion import MotionModule
    from ..models.transformer import AudioModule, SpatialTransformer

    kinds = (SpatialTransformer, AudioModule, MotionModule, ResnetBlock)
    count = sum(1 for module in net.modules() if isinstance(module, kinds))
    apply_activation_checkpointing(
        net,
        checkpoint_wrapper_fn=lambda module: checkpoint_wrapper(module, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda module: isinstance(module, kinds),
    )
    return count


class TextEmbeddingCache:
    """CLIP embeddings of captions, computed once per distinct caption (captions repeat a lot)."""

    def __init__(self, encoder, max_entries: int = TEXT_CACHE_SIZE):
        self.encoder = encoder
        self.max_entries = max_entries
        self.cache: dict[str, torch.Tensor] = {}

    def embed(self, captions: list[str], keep: torch.Tensor) -> torch.Tensor:
        """(B, 77, D); captions whose `keep` is False become "" (text dropout)."""
        rows = []
        for caption, kept in zip(captions, keep.tolist()):
            text = caption if kept else ""
            if text not in self.cache:
                if len(self.cache) >= self.max_entries:
                    self.cache.pop(next(iter(self.cache)))
                self.cache[text] = self.encoder.encode([text])[0]
            rows.append(self.cache[text])
        return torch.stack(rows)


@dataclass
class TrainResult:
    losses: list = field(default_factory=list)  # (step, mean loss of the step)
    final_step: int = 0
    resumed_from: Optional[str] = None
    export: Optional[Path] = None
    validation_videos: list = field(default_factory=list)


@dataclass
class _TrainingParts:
    """What `Trainer._prepare` builds for a run."""

    dataset: TalkingClipDataset
    model: torch.nn.Module  # EmoCASTTrainingModel, possibly wrapped by accelerate
    optimizer: object
    lr_scheduler: object
    ema: Optional[EMAWeights]
    named_trainable: list
    vae: object
    text_encoder: object
    texts: TextEmbeddingCache
    noise_scheduler: object


class Trainer:
    """Builds everything from a `TrainingConfig` and runs the stage.

    `accelerator` may be passed in (tests, notebooks); by default one is built from the config and
    the `accelerate launch` environment.
    """

    def __init__(self, config: TrainingConfig, accelerator=None):
        if not config.output_dir:
            raise ValueError("output_dir is required")
        if not config.data.root:
            raise ValueError("data.root is required")
        self.config = config
        self.accelerator = accelerator or self._make_accelerator()
        self.output_dir = Path(config.output_dir)
        self.plan: StagePlan = plan_stage(config.stage)
        self.net_config = resolve_architecture(config.model.architecture)
        # accelerate names mixed precision "no", "fp16" or "bf16" (and "fp8", whose weights stay float32).
        self.weight_dtype = DTYPE_NAMES.get(self.accelerator.mixed_precision, torch.float32)

    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

        train = self.config.train
        return Accelerator(
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            mixed_precision=train.mixed_precision,
            project_config=ProjectConfiguration(project_dir=self.config.output_dir),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=train.find_unused_parameters)],
        )

    # --- building ---------------------------------------------------------------------------------

    def build_data(self) -> TalkingClipDataset:
        data, sampling = self.config.data, self.config.sampling
        if 2 * data.audio_margin + 1 != self.net_config.audio_window:
            raise ValueError(
                f"data.audio_margin {data.audio_margin} gives {2 * data.audio_margin + 1}-frame audio windows; "
                f"the network's audio projection takes {self.net_config.audio_window}"
            )
        num_frames = 1 if self.plan.single_frame else data.num_frames
        num_motion = 0 if self.plan.single_frame else data.num_motion_frames
        return TalkingClipDataset(
            data.root,
            num_frames=num_frames,
            num_motion_frames=num_motion,
            reference=ReferencePolicy(
                sampling.reference_policy, sampling.cross_clip_probability, sampling.expression_quantile, data.sample_margin
            ),
            audio_margin=data.audio_margin,
            caption_choice=data.caption_choice,
        )

    def build_net(self) -> EmoCASTNet:
        model = self.config.model
        torch.manual_seed(self.config.seed)  # the fresh initialisation of new layers is reproducible
        net = EmoCASTNet(self.net_config)
        self.init_summary = initialize_net(net, model.init_net, model.init_net_strict, model.init_sd15_unet, model.init_motion_module)
        return net

    def build_frozen_encoders(self):
        from diffusers import AutoencoderKL

        from ..conditioning.emotion import EmotionTextEncoder

        model, device = self.config.model, self.accelerator.device
        if not model.vae or not model.text_encoder:
            raise ValueError("model.vae and model.text_encoder are required")
        vae = AutoencoderKL.from_pretrained(model.vae, local_files_only=True, torch_dtype=self.weight_dtype).to(device)
        vae.requires_grad_(False).eval()
        text_encoder = EmotionTextEncoder.from_pretrained(
            model.text_encoder, tokenizer_path=model.text_tokenizer, device=device, dtype=self.weight_dtype
        )
        return vae, text_encoder

    def build_optimizer(self, parameters):
        optim, train = self.config.optimizer, self.config.train
        learning_rate = optim.learning_rate
        if optim.scale_lr:
            learning_rate *= train.gradient_accumulation_steps * train.batch_size * self.accelerator.num_processes
        if optim.use_8bit_adam:
            try:
                import bitsandbytes
            except ImportError as error:
                raise ImportError("optimizer.use_8bit_adam needs the 'bitsandbytes' package (pip install bitsandbytes)") from error
            optimizer_class = bitsandbytes.optim.AdamW8bit
        else:
            optimizer_class = torch.optim.AdamW
        return optimizer_class(
            parameters, lr=learning_rate, betas=(optim.adam_beta1, optim.adam_beta2),
            weight_decay=optim.adam_weight_decay, eps=optim.adam_epsilon,
        )

    # --- running ----------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        train = config.train
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if accelerator.is_main_process:
            config.save(self.output_dir / "training_config.json")

        parts = self._prepare()
        result = TrainResult()
        step = self._resume(result)
        samples_per_step = train.batch_size * train.gradient_accumulation_steps * accelerator.num_processes
        rank_log = RankLog(self.output_dir, accelerator.process_index)
        batches = rank_log.watch(iter(self._loader(parts.dataset, start=step * samples_per_step)))
        parts.model.train()

        log_path = self.output_dir / "log.jsonl"
        started = time.time()
        while step < train.max_steps:
            loss = self._train_step(parts, batches, step)
            step += 1
            rank_log.end_step(step)
            result.losses.append((step, loss))
            if accelerator.is_main_process and (step % max(1, train.log_every) == 0 or step == train.max_steps):
                record = {"step": step, "loss": loss, "lr": parts.lr_scheduler.get_last_lr()[0], "seconds": round(time.time() - started, 2)}
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                logger.info("step %d loss %.5f", step, loss)
            if config.checkpoint.every and step % config.checkpoint.every == 0 and step < train.max_steps:
                self.save_checkpoint(parts.model, parts.ema, step, samples_per_step)
            if config.validation.every and step % config.validation.every == 0:
                result.validation_videos += self.validate(parts.model, parts.vae, parts.text_encoder, parts.dataset, step)

        result.final_step = step
        rank_log.end_run(step, parts.named_trainable)
        # The loop never saves at the last step; the final state is saved here when this run trained.
        # (Decided from step counts, never from the file system: every process must take the same
        # branch, since saving involves collective operations.)
        if config.checkpoint.every and result.losses:
            self.save_checkpoint(parts.model, parts.ema, step, samples_per_step)
        result.export = self.export(parts.model, parts.ema, self.output_dir / EXPORT_FOLDER / "final")
        accelerator.wait_for_everyone()
        return result

    def _prepare(self) -> "_TrainingParts":
        """Data, network (stage applied), frozen encoders, optimizer, schedules, EMA; prepared by accelerate."""
        config, accelerator, train = self.config, self.accelerator, self.config.train
        dataset = self.build_data()
        net = self.build_net()
        trainable = apply_stage(net, self.plan, exclude=unreachable_parameter_names(net))
        named_trainable = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
        if self.weight_dtype != torch.float32 and train.cast_frozen_weights:
            for parameter in net.parameters():
                if not parameter.requires_grad:
                    parameter.data = parameter.data.to(self.weight_dtype)
        if train.gradient_checkpointing:
            apply_gradient_checkpointing(net)
        logger.info("stage %s: %d trainable tensors, %.2f M parameters", self.plan.name, len(trainable),
                    sum(p.numel() for _, p in named_trainable) / 1e6)

        vae, text_encoder = self.build_frozen_encoders()
        model = EmoCASTTrainingModel(net, self.plan.lip_loss_weight, self.plan.face_loss_weight)
        optimizer = self.build_optimizer([p for _, p in named_trainable])
        lr_scheduler = self._lr_scheduler(optimizer)
        ema = EMAWeights(named_trainable, config.ema.decay) if config.ema.enabled else None
        self._configure_deepspeed_batch_size()
        model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
        if ema is not None:
            accelerator.register_for_checkpointing(ema)
        return _TrainingParts(
            dataset, model, optimizer, lr_scheduler, ema, named_trainable, vae, text_encoder,
            TextEmbeddingCache(text_encoder), make_training_scheduler(config.noise),
        )

    def _resume(self, result: TrainResult) -> int:
        """Load the checkpoint to resume from, if any; returns the step to continue from."""
        resume = find_resume_checkpoint(self.output_dir, self.config.checkpoint.resume)
        if resume is None:
            return 0
        self.accelerator.load_state(str(resume))
        step = int(read_trainer_state(resume)["step"])
        result.resumed_from = str(resume)
        logger.info("resumed from %s at step %d", resume, step)
        return step

    def _loader(self, dataset: TalkingClipDataset, start: int) -> DataLoader:
        """This process's share of the sample stream from global position `start`."""
        config, accelerator = self.config, self.accelerator
        sampler = EmotionBalancedSampler(
            dataset.labels(), config.sampling.emotion_balance, config.sampling.intensity_balance, seed=config.seed,
            epoch_size=config.sampling.epoch_size, num_replicas=accelerator.num_processes,
            rank=accelerator.process_index, start=start,
        )
        return DataLoader(
            dataset, batch_size=config.train.batch_size, sampler=sampler, collate_fn=collate_samples,
            num_workers=config.data.num_workers, pin_memory=accelerator.device.type == "cuda",
        )

    def _train_step(self, parts: "_TrainingParts", batches, step: int) -> float:
        """One optimizer step (all micro-batches); returns the loss averaged over processes."""
        config, accelerator = self.config, self.accelerator
        losses = []
        for micro in range(config.train.gradient_accumulation_steps):
            batch = next(batches)
            generator = torch.Generator().manual_seed(mix_seed(config.seed, step, micro, accelerator.process_index))
            encoded = self._encode_batch(batch, parts.vae, parts.texts, parts.noise_scheduler, generator)
            with accelerator.accumulate(parts.model):
                output = parts.model(encoded)
                accelerator.backward(output["loss"])
                if accelerator.sync_gradients and config.optimizer.max_grad_norm > 0:
                    accelerator.clip_grad_norm_([p for _, p in parts.named_trainable], config.optimizer.max_grad_norm)
                parts.optimizer.step()
                parts.lr_scheduler.step()
                parts.optimizer.zero_grad(set_to_none=True)
            losses.append(output["loss"].detach())
        if parts.ema is not None:
            parts.ema.update()
        loss = accelerator.gather(torch.stack(losses).mean()[None]).mean().item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {step + 1}")
        return loss

    def _lr_scheduler(self, optimizer):
        from diffusers.optimization import get_scheduler

        optim, processes = self.config.optimizer, self.accelerator.num_processes
        # accelerate steps a prepared scheduler once per process per optimizer step.
        return get_scheduler(
            optim.lr_scheduler, optimizer, num_warmup_steps=optim.lr_warmup_steps * processes,
            num_training_steps=max(1, self.config.train.max_steps) * processes,
        )

    def _configure_deepspeed_batch_size(self) -> None:
        # DeepSpeed wants the micro-batch size; it normally reads it from a prepared DataLoader,
        # which this trainer does not hand to accelerate (it shards the data itself).
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is not None:
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = self.config.train.batch_size

    @torch.no_grad()
    def _encode_batch(self, batch: dict, vae, texts: TextEmbeddingCache, scheduler, generator: torch.Generator) -> TrainingBatch:
        """Frozen encoders, noise and dropout: a loader batch -> `TrainingBatch` on the device."""
        config, device = self.config, self.accelerator.device
        pixels = batch["pixel_values"]  # (B, F, 3, S, S)
        batch_size, num_frames = pixels.shape[:2]
        references = batch["reference_pixel_values"].clone()  # (B, 1 + M, 3, S, S)
        has_motion = references.shape[1] > 1
        keep = draw_condition_keep(batch_size, config.dropout, generator, has_motion)
        if has_motion:
            # Dropped motion frames become the reference image: how the first clip of a video starts.
            dropped = ~keep.motion_frames
            references[dropped, 1:] = references[dropped, :1]

        scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        latents = self._vae_encode(vae, pixels.flatten(0, 1), generator, sample=True) * scale
        latents = latents.reshape(batch_size, num_frames, *latents.shape[1:]).transpose(1, 2).float()
        if latents.shape[-2] != latents.shape[-1]:
            raise ValueError(f"the training frames must be square; their latents are {latents.shape[-2]}x{latents.shape[-1]}")
        reference_latents = self._vae_encode(vae, references.flatten(0, 1), generator, sample=False) * scale
        # Only real preceding frames are degraded: dropped ones are the reference, exact at inference too.
        reference_latents = noise_motion_frames(reference_latents, references.shape[1] - 1,
                                                config.noise.motion_frame_noise, keep.motion_frames, generator)
        num_levels = len(self.net_config.unet.block_out_channels)

        noise = sample_noise(latents, config.noise.noise_offset, generator)
        timesteps = sample_timesteps(batch_size, scheduler.config.num_train_timesteps, generator, device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = scheduler.get_velocity(latents, noise, timesteps)
        keep = keep.to(device)
        return TrainingBatch(
            noisy_latents=noisy,
            target=target,
            timesteps=timesteps,
            sample_weights=min_snr_weights(scheduler, timesteps, config.noise.min_snr_gamma),
            reference_latents=reference_latents,
            text_tokens=texts.embed(batch["caption"], keep.text),
            face_embedding=batch["face_embedding"].to(device),
            face_region=batch["face_region"].to(device),
            audio_windows=batch["audio_windows"].to(device),
            # All four front-end levels are fitted to the VAE's latent grid, then the network's levels
            # are kept: the same as at inference (`pipeline`).
            region_masks=[
                [level.to(device) for level in masks_for_latent_grid(batch[f"{name}_mask"], latents.shape[-1])[:num_levels]]
                for name in ("full", "face", "lip")
            ],
            keep=keep,
        )

    def _vae_encode(self, vae, pixels: torch.Tensor, generator: torch.Generator, sample: bool) -> torch.Tensor:
        """Targets use a posterior sample (as Hallo's training); references its mean (as inference)."""
        out = []
        for chunk in pixels.split(VAE_CHUNK):
            posterior = vae.encode(chunk.to(self.accelerator.device, vae.dtype)).latent_dist
            out.append(posterior.sample(generator) if sample else posterior.mean)
        return torch.cat(out)

    # --- checkpoints, exports, validation ---------------------------------------------------------

    def _net_state(self, model) -> dict:
        """The net's full state dict in net.pth layout (gathered across processes when sharded)."""
        state = self.accelerator.get_state_dict(model)
        return {key.removeprefix("net."): value for key, value in state.items() if key.startswith("net.")}

    def save_checkpoint(self, model, ema, step: int, samples_per_step: int) -> Path:
        accelerator = self.accelerator
        folder = checkpoint_dir(self.output_dir, step)
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            write_trainer_state(folder, {"step": step, "samples_seen": step * samples_per_step, "stage": self.plan.name})
            mark_complete(folder)
            prune_checkpoints(self.output_dir, self.config.checkpoint.keep)
        self.export(model, ema, self.output_dir / EXPORT_FOLDER / f"step-{step:06d}")
        accelerator.wait_for_everyone()
        return folder

    def export(self, model, ema, folder: Path) -> Optional[Path]:
        state = self._net_state(model)
        if not self.accelerator.is_main_process:
            return None
        averaged = ema.averaged_state() if ema is not None and self.config.ema.use_for_export else None
        return export_net(export_state_dict(state, averaged), folder, self.net_config, self.config.checkpoint.export_dtype)

    def validate(self, model, vae, text_encoder, dataset: TalkingClipDataset, step: int) -> list[Path]:
        from .model import unwrap_training_model
        from .validation import render_validation, validation_records

        accelerator = self.accelerator
        written = []
        if accelerator.is_main_process:
            net = unwrap_training_model(accelerator.unwrap_model(model)).net
            records = validation_records(dataset.records, self.config.validation)
            with accelerator.autocast():
                written = render_validation(
                    net, vae, text_encoder, dataset.reader, records, self.config.validation, self.config.noise,
                    self.output_dir / "validation" / f"step-{step:06d}", self.config.data.num_motion_frames,
                    self.config.data.audio_margin,
                )
        accelerator.wait_for_everyone()
        return written
