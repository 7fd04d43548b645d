"""The on-disk layout of EmoCAST's model files, in one place.

Everything lives under a *models root*: ComfyUI's ``models/`` folder, or a standalone folder with the
same subfolders (``--models DIR``). `resolve_model_paths` finds every file, accepting the alternative
locations users already have (ComfyUI's ``vae/``, ``text_encoders/``, ``audio_encoders/``,
``insightface/`` folders, or Hallo-style folders under ``emocast/``), and reports every missing required
file in ONE error, so a user fixes the whole setup in one pass instead of one file per run.

`LAYOUTS` says, for each kind of model, which folders it may live in and which files make it; the
resolver here, the checkpoint loader (`loading.checkpoint_config`), the text encoder's tokenizer search
and the ComfyUI loader nodes' listings all read it, so a layout is changed in one place.

Nothing here downloads anything: the pack never touches the network at run time.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]

JMAOMAO_EMOCAST = "https://huggingface.co/Jmaomao/EmoCAST"
SD_VAE_FT_MSE = "https://huggingface.co/stabilityai/sd-vae-ft-mse"
CLIP_VIT_L14 = "https://huggingface.co/openai/clip-vit-large-patch14"
WAV2VEC2_BASE_960H = "https://huggingface.co/facebook/wav2vec2-base-960h"
INSIGHTFACE_ANTELOPEV2 = "InsightFace `antelopev2` model pack (github.com/deepinsight/insightface, model zoo)"


@dataclass(frozen=True)
class ModelFile:
    """One row of `MODEL_TABLE`: a file (or the files of one folder) a user has to put in place."""

    component: str  # the name `resolve_model_paths(require=...)` uses
    file: str
    folder: str  # preferred folder under the models root, with forward slashes
    size_mb: float  # approximate download size
    source: str
    required: bool
    note: str = ""


MODEL_TABLE: tuple[ModelFile, ...] = (
    ModelFile("checkpoint", "net.pth", "emocast", 4850, JMAOMAO_EMOCAST, True,
              "fp16. `net.safetensors`, or any single `.safetensors`/`.pth` file in that folder, also works"),
    ModelFile("unet_config", "unet_config.json", "emocast", 0.01, "SD1.5 `unet/config.json`", False,
              "a default ships with the pack"),
    ModelFile("vae", "config.json + diffusion_pytorch_model.safetensors", "vae/sd-vae-ft-mse", 335, SD_VAE_FT_MSE,
              True, "diffusers folder; also found in `emocast/sd-vae-ft-mse/`"),
    ModelFile("text_encoder", "clip_l.safetensors", "text_encoders", 246,
              f"{CLIP_VIT_L14} (text tower), or ComfyUI's `clip_l.safetensors`", True,
              "246 MB fp16 / 492 MB fp32. Or a whole HF folder `text_encoders/clip-vit-large-patch14/` "
              "(config + weights + tokenizer)"),
    ModelFile("text_encoder", "vocab.json + merges.txt", "text_encoders/clip_l_tokenizer", 1.5,
              f"{CLIP_VIT_L14} (tokenizer files)", True, "not needed with the HF folder"),
    ModelFile("audio_encoder", "config.json + model.safetensors + preprocessor_config.json",
              "audio_encoders/wav2vec2-base-960h", 378, WAV2VEC2_BASE_960H, True,
              "`pytorch_model.bin` instead of `model.safetensors` also works; also found in `emocast/wav2vec2-base-960h/`"),
    ModelFile("face", "scrfd_10g_bnkps.onnx", "insightface/models/antelopev2", 16.9, INSIGHTFACE_ANTELOPEV2, True,
              "face detector; also found in `emocast/face_analysis/models/`. Non-commercial licence"),
    ModelFile("face", "glintr100.onnx", "insightface/models/antelopev2", 261, INSIGHTFACE_ANTELOPEV2, True,
              "ArcFace identity embedding; same folder as the detector. Non-commercial licence"),
    ModelFile("face_2d106", "2d106det.onnx", "insightface/models/antelopev2", 5.0, INSIGHTFACE_ANTELOPEV2, False,
              "106-point landmarks"),
    ModelFile("face_landmarker", "face_landmarker_v2_with_blendshapes.task", "emocast", 3.8,
              "MediaPipe FaceLandmarker (as in the fudan-generative-ai/hallo `face_analysis/models/` folder)", False,
              "face and lip masks; also found in `emocast/face_analysis/models/`"),
    ModelFile("vocal_separator", "Kim_Vocal_2.onnx", "emocast/audio_separator", 66.8,
              "the audio-separator (UVR MDX-Net) model set", False, "vocal separation before audio features"),
)  # fmt: skip

COMPONENTS = tuple(dict.fromkeys(row.component for row in MODEL_TABLE))
DEFAULT_REQUIRED = ("checkpoint", "vae", "text_encoder", "audio_encoder", "face")


@dataclass(frozen=True)
class FolderLayout:
    """Where one kind of model lives under a models root and what makes it.

    folders: candidate folders under the models root, with forward slashes, preferred first.
    files: for a model stored as a folder, the files that folder must hold; each entry lists the
        accepted names of one file, preferred name first.
    suffixes: the endings of its model files (for a model stored as one file, the accepted ones).
    """

    folders: tuple[str, ...]
    files: tuple[tuple[str, ...], ...] = ()
    suffixes: tuple[str, ...] = ()

    @property
    def top_folders(self) -> tuple[str, ...]:
        """The subfolders of the models root it lives in (ComfyUI's model folder names)."""
        return tuple(dict.fromkeys(folder.split("/")[0] for folder in self.folders))


HF_CONFIG_FILE = "config.json"  # marks a Hugging Face / diffusers model folder
_TOKENIZER_FILES = (("vocab.json",), ("merges.txt",))
LAYOUTS: dict[str, FolderLayout] = {
    "checkpoint": FolderLayout(("emocast",), suffixes=(".safetensors", ".pth")),
    "vae": FolderLayout(
        ("vae/sd-vae-ft-mse", "emocast/sd-vae-ft-mse", "emocast/vae/sd-vae-ft-mse"),
        ((HF_CONFIG_FILE,), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    ),
    # CLIP-L's text tower as one file (ComfyUI's clip_l.safetensors), with a tokenizer folder beside it ...
    "text_encoder_file": FolderLayout(("text_encoders",), suffixes=(".safetensors",)),
    "tokenizer": FolderLayout(("text_encoders/clip_l_tokenizer",), _TOKENIZER_FILES),
    # ... or a whole Hugging Face folder, tokenizer included.
    "text_encoder_folder": FolderLayout(
        ("text_encoders/clip-vit-large-patch14", "emocast/clip-vit-large-patch14"),
        ((HF_CONFIG_FILE,), ("model.safetensors", "pytorch_model.bin"), *_TOKENIZER_FILES),
    ),
    "audio_encoder": FolderLayout(
        ("audio_encoders/wav2vec2-base-960h", "emocast/wav2vec2-base-960h"),
        ((HF_CONFIG_FILE,), ("model.safetensors", "pytorch_model.bin"), ("preprocessor_config.json",)),
    ),
    "face": FolderLayout(
        ("insightface/models/antelopev2",
         "insightface/models/antelopev2/antelopev2",  # the antelopev2 zip often unpacks one level deeper
         "emocast/face_analysis/models"),
        (("scrfd_10g_bnkps.onnx",), ("glintr100.onnx",)),
        suffixes=(".onnx",),
    ),
    "vocal_separator": FolderLayout(("emocast/audio_separator",), suffixes=(".onnx",)),
}  # fmt: skip

UPSTREAM_CHECKPOINT_NAME = "net.pth"  # the name the checkpoint is published under; suggested when missing
CHECKPOINT_NAMES = ("net.safetensors", UPSTREAM_CHECKPOINT_NAME, "emocast_net.safetensors")  # preference order
CHECKPOINT_SUFFIXES = LAYOUTS["checkpoint"].suffixes
# Architecture files read beside a checkpoint, in this order ("{stem}": its name without the ending):
# an EmoCAST config, then an SD UNet config (see `loading.checkpoint_config`).
CHECKPOINT_CONFIG_FILES = ("{stem}.json", "config.json")
UNET_CONFIG_FILE = "unet_config.json"
# Where the text encoder's tokenizer is looked for when none is named, in this order ("{stem}": the
# single file's name without the ending; folders are relative to the file's folder, or to a model folder).
TOKENIZER_BESIDE_FILE = ("{stem}_tokenizer", "clip_l_tokenizer", "tokenizer")
TOKENIZER_BESIDE_FOLDER = (".", "tokenizer", "../tokenizer")


def checkpoint_config_files(checkpoint: Path) -> list[Path]:
    """The architecture files that may describe ``checkpoint``, beside it, in the order they are tried."""
    names = (*CHECKPOINT_CONFIG_FILES, UNET_CONFIG_FILE)
    return [checkpoint.parent / name.format(stem=checkpoint.stem) for name in names]


def tokenizer_candidates(text_encoder: Path) -> list[Path]:
    """Folders that may hold the tokenizer of a text encoder (a single file or a model folder), in order."""
    if text_encoder.suffix == ".safetensors" or text_encoder.is_file():
        return [text_encoder.parent / name.format(stem=text_encoder.stem) for name in TOKENIZER_BESIDE_FILE]
    return [Path(os.path.normpath(text_encoder / name)) for name in TOKENIZER_BESIDE_FOLDER]


def is_tokenizer_folder(folder: Path) -> bool:
    """A folder with a CLIP BPE tokenizer: vocab.json + merges.txt, or a fast tokenizer's tokenizer.json."""
    bpe_pair = all(any((folder / name).is_file() for name in names) for names in _TOKENIZER_FILES)
    return bpe_pair or (folder / "tokenizer.json").is_file()


def placement(component: str, models_dir: str = "models") -> str:
    """Where ``component``'s files go, as a phrase for a message, e.g. ``"net.pth in models/emocast/"``."""
    by_folder: dict[str, list[str]] = {}
    for row in (row for row in MODEL_TABLE if row.component == component):
        by_folder.setdefault(row.folder, []).append(row.file)
    if not by_folder:
        raise ValueError(f"unknown model component {component!r}; known: {list(COMPONENTS)}")
    return " and ".join(f"{' + '.join(files)} in {models_dir}/{folder}/" for folder, files in by_folder.items())


@dataclass(frozen=True)
class EmoCASTModelPaths:
    """Resolved paths of EmoCAST's model files; ``None`` where a file is absent (only possible when optional)."""

    models_roots: tuple[Path, ...]
    checkpoint: Path | None = None
    unet_config: Path | None = None  # None: use the SD1.5 UNet config shipped with the pack
    vae_dir: Path | None = None  # diffusers folder
    text_encoder_weights: Path | None = None  # clip_l.safetensors, or the HF folder's weights file
    text_encoder_config: Path | None = None  # the HF folder's config.json; None: use the pack's CLIP-L config
    tokenizer_dir: Path | None = None  # folder with vocab.json + merges.txt
    audio_encoder_dir: Path | None = None  # transformers wav2vec2 folder
    face_detector: Path | None = None  # scrfd_10g_bnkps.onnx
    face_recognizer: Path | None = None  # glintr100.onnx
    face_landmarks_2d106: Path | None = None  # 2d106det.onnx
    face_landmarker_task: Path | None = None  # face_landmarker_v2_with_blendshapes.task
    vocal_separator: Path | None = None  # Kim_Vocal_2.onnx


@dataclass(frozen=True)
class MissingModelFile:
    """One missing file: where it should be, what it is and where to get it."""

    component: str
    path: Path  # the expected path, under the first models root
    source: str
    size_mb: float | None = None
    also_accepted: tuple[str, ...] = ()
    problem: str = ""  # set when something is there but unusable (e.g. several candidate checkpoints)


class MissingModelFilesError(FileNotFoundError):
    """Raised once with every missing required model file; ``missing`` holds them all."""

    def __init__(self, missing: Sequence[MissingModelFile], models_roots: Sequence[Path]):
        self.missing = tuple(missing)
        self.models_roots = tuple(models_roots)
        super().__init__(self._format())

    def __str__(self) -> str:
        return self.args[0]

    def _format(self) -> str:
        roots = ", ".join(str(root) for root in self.models_roots)
        count = len(self.missing)
        lines = [f"EmoCAST is missing {count} required model file{'s' if count != 1 else ''} under {roots} "
                 "(nothing is downloaded automatically):"]  # fmt: skip
        # One entry per component and folder, so a folder download (e.g. a diffusers VAE) reads as one task.
        groups: dict[tuple[str, Path], list[MissingModelFile]] = {}
        for item in self.missing:
            groups.setdefault((item.component, item.path.parent), []).append(item)
        for (component, folder), items in groups.items():
            first = items[0]
            # Files of one table row share its size (a folder download); different rows add up.
            row_sizes = {(item.size_mb, item.source): item.size_mb for item in items if item.size_mb is not None}
            size = f", ~{_format_size(sum(row_sizes.values()))} MB" if row_sizes else ""
            lines.append(f"  - {component}{size}: put in {folder}{os.sep}")
            lines.extend(f"      {item.path}" for item in items)
            if first.problem:
                lines.append(f"    problem: {first.problem}")
            lines.append(f"    get it from: {first.source}")
            if first.also_accepted:
                lines.append(f"    also accepted: {'; '.join(first.also_accepted)}")
        lines.append("See the model table in the README for the full layout.")
        return "\n".join(lines)


@dataclass
class _Resolver:
    roots: tuple[Path, ...]
    missing: list[MissingModelFile] = field(default_factory=list)

    def find_folder(self, layout: FolderLayout) -> tuple[Path | None, dict[str, Path], list[Path]]:
        """Find the first root/folder of ``layout`` holding every file.

        Returns ``(folder, found files by preferred name, missing paths)``; when no candidate is complete,
        the folder is ``None`` and the missing paths are those of the most complete candidate (the first
        one on ties), which is the folder the user most likely meant to fill.
        """
        best_missing: list[Path] | None = None
        best_found_count = -1
        for root in self.roots:
            for relative_folder in layout.folders:
                folder = root / relative_folder
                found, missing = {}, []
                for names in layout.files:
                    path = _first_file(folder, names)
                    if path is None:
                        missing.append(folder / names[0])
                    else:
                        found[names[0]] = path
                if not missing:
                    return folder, found, []
                if len(found) > best_found_count:
                    best_found_count, best_missing = len(found), missing
        return None, {}, best_missing or []

    def find_file(self, relative_paths: Sequence[str]) -> Path | None:
        for root in self.roots:
            for relative_path in relative_paths:
                if (root / relative_path).is_file():
                    return root / relative_path
        return None

    def report(self, component: str, paths: Iterable[Path], also_accepted: Sequence[str] = (), problem: str = ""):
        for path in paths:
            row = _table_row(component, path.name)
            self.missing.append(MissingModelFile(component, path, row.source, row.size_mb, tuple(also_accepted),
                                                 problem))  # fmt: skip


def resolve_model_paths(
    models_root: PathLike | Sequence[PathLike],
    *,
    require: Sequence[str] = DEFAULT_REQUIRED,
    checkpoint_name: str | None = None,
    default_tokenizer_dir: PathLike | None = None,
) -> EmoCASTModelPaths:
    """Find EmoCAST's model files under ``models_root`` and raise one error listing everything missing.

    Args:
        models_root: ComfyUI's ``models/`` folder or a standalone folder with the same subfolders; a list of
            roots is searched in order (e.g. ComfyUI's main and extra model folders).
        require: components that must be present, from `COMPONENTS`. Components not listed are still
            resolved when present and left ``None`` otherwise.
        checkpoint_name: a specific checkpoint file in ``emocast/`` (or an absolute path), e.g. from a
            ComfyUI combo box. By default ``net.safetensors``/``net.pth`` is used, else the only
            ``.safetensors``/``.pth`` file in ``emocast/``.
        default_tokenizer_dir: a CLIP tokenizer folder to fall back on (e.g. one shipped with the pack)
            when the models root has none.

    Raises:
        MissingModelFilesError: one or more required files are missing; the message lists them all.
        ValueError: ``require`` names an unknown component.
    """
    if isinstance(require, str):
        require = (require,)
    roots = (models_root,) if isinstance(models_root, (str, os.PathLike)) else tuple(models_root)
    if not roots:
        raise ValueError("models_root must name at least one folder")
    unknown = sorted(set(require) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown model components {unknown}; known: {list(COMPONENTS)}")
    resolver = _Resolver(tuple(Path(root).expanduser().absolute() for root in roots))
    required = set(require)

    checkpoint = _resolve_checkpoint(resolver, checkpoint_name, "checkpoint" in required)
    emocast_folder = LAYOUTS["checkpoint"].folders[0]
    unet_config = resolver.find_file([f"{emocast_folder}/{UNET_CONFIG_FILE}"])
    if unet_config is None and "unet_config" in required:
        resolver.report("unet_config", [resolver.roots[0] / emocast_folder / UNET_CONFIG_FILE])

    vae_dir, _, vae_missing = resolver.find_folder(LAYOUTS["vae"])
    if vae_dir is None and "vae" in required:
        also_accepted = ["emocast/sd-vae-ft-mse/", "diffusion_pytorch_model.bin instead of .safetensors"]
        resolver.report("vae", vae_missing, also_accepted)

    text_encoder = _resolve_text_encoder(resolver, default_tokenizer_dir, "text_encoder" in required)

    audio_encoder_dir, _, audio_missing = resolver.find_folder(LAYOUTS["audio_encoder"])
    if audio_encoder_dir is None and "audio_encoder" in required:
        also_accepted = ["emocast/wav2vec2-base-960h/", "pytorch_model.bin instead of model.safetensors"]
        resolver.report("audio_encoder", audio_missing, also_accepted)

    face = _resolve_face(resolver, required)
    separator_file = f"{LAYOUTS['vocal_separator'].folders[0]}/Kim_Vocal_2.onnx"
    vocal_separator = resolver.find_file([separator_file])
    if vocal_separator is None and "vocal_separator" in required:
        resolver.report("vocal_separator", [resolver.roots[0] / separator_file])

    if resolver.missing:
        raise MissingModelFilesError(resolver.missing, resolver.roots)
    return EmoCASTModelPaths(
        models_roots=resolver.roots,
        checkpoint=checkpoint,
        unet_config=unet_config,
        vae_dir=vae_dir,
        audio_encoder_dir=audio_encoder_dir,
        vocal_separator=vocal_separator,
        **text_encoder,
        **face,
    )


def _resolve_checkpoint(resolver: _Resolver, checkpoint_name: str | None, is_required: bool) -> Path | None:
    emocast_folder = LAYOUTS["checkpoint"].folders[0]
    expected = resolver.roots[0] / emocast_folder / (checkpoint_name or UPSTREAM_CHECKPOINT_NAME)
    if checkpoint_name is not None:
        if Path(checkpoint_name).is_absolute():
            if Path(checkpoint_name).is_file():
                return Path(checkpoint_name)
            expected = Path(checkpoint_name)
        else:
            found = resolver.find_file([f"{emocast_folder}/{checkpoint_name}"])
            if found is not None:
                return found
        if is_required:
            resolver.report("checkpoint", [expected])
        return None

    found = resolver.find_file([f"{emocast_folder}/{name}" for name in CHECKPOINT_NAMES])
    if found is not None:
        return found
    for root in resolver.roots:
        candidates = _weights_files(root / emocast_folder)
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            # Guessing between several checkpoints could silently load the wrong model.
            if is_required:
                names = ", ".join(path.name for path in candidates)
                resolver.report("checkpoint", [expected], problem=f"several candidate checkpoints ({names}); "
                                "rename the EmoCAST one to net.safetensors/net.pth or choose it by name")  # fmt: skip
            return None
    if is_required:
        resolver.report("checkpoint", [expected],
                        ["emocast/net.safetensors", "any single .safetensors or .pth file in emocast/"])  # fmt: skip
    return None


def _resolve_text_encoder(resolver: _Resolver, default_tokenizer_dir: PathLike | None, is_required: bool) -> dict:
    """Prefer ``clip_l.safetensors`` + a tokenizer folder; else a complete HF ``clip-vit-large-patch14`` folder."""
    weights = resolver.find_file([f"{LAYOUTS['text_encoder_file'].folders[0]}/clip_l.safetensors"])
    tokenizer_dir, _, tokenizer_missing = resolver.find_folder(LAYOUTS["tokenizer"])
    if tokenizer_dir is None and default_tokenizer_dir is not None:
        default_dir = Path(default_tokenizer_dir)
        if all((default_dir / names[0]).is_file() for names in LAYOUTS["tokenizer"].files):
            tokenizer_dir = default_dir
    if weights is not None and tokenizer_dir is not None:
        return {"text_encoder_weights": weights, "text_encoder_config": None, "tokenizer_dir": tokenizer_dir}

    hf_folder, hf_found, hf_missing = resolver.find_folder(LAYOUTS["text_encoder_folder"])
    if hf_folder is not None:
        return {"text_encoder_weights": hf_found["model.safetensors"], "text_encoder_config": hf_found["config.json"],
                "tokenizer_dir": hf_folder}  # fmt: skip

    if is_required:
        hf_is_partial = any(path.parent.is_dir() for path in hf_missing) and weights is None
        if hf_is_partial:  # the user started on the HF folder: report what that folder lacks
            resolver.report("text_encoder", hf_missing, ["text_encoders/clip_l.safetensors + clip_l_tokenizer/"])
        else:
            missing = [] if weights is not None else [resolver.roots[0] / "text_encoders" / "clip_l.safetensors"]
            missing += [] if tokenizer_dir is not None else tokenizer_missing
            resolver.report("text_encoder", missing, ["an HF folder text_encoders/clip-vit-large-patch14/ "
                                                      "(config.json, model.safetensors, vocab.json, merges.txt)"])  # fmt: skip
    return {"text_encoder_weights": weights, "text_encoder_config": None, "tokenizer_dir": tokenizer_dir}


def _resolve_face(resolver: _Resolver, required: set[str]) -> dict:
    """InsightFace detector + recogniser from one folder, then the optional landmark models."""
    face_folders = LAYOUTS["face"].folders
    face_dir, face_found, face_missing = resolver.find_folder(LAYOUTS["face"])
    if face_dir is None and "face" in required:
        resolver.report("face", face_missing, ["emocast/face_analysis/models/"])

    # Optional extras: look beside the chosen face models first.
    near_face = [
        str(face_dir.relative_to(root)) for root in resolver.roots if face_dir and face_dir.is_relative_to(root)
    ]
    landmarks_2d106 = resolver.find_file([f"{folder}/2d106det.onnx" for folder in (*near_face, *face_folders)])
    if landmarks_2d106 is None and "face_2d106" in required:
        resolver.report("face_2d106", [resolver.roots[0] / face_folders[0] / "2d106det.onnx"])
    task_name = "face_landmarker_v2_with_blendshapes.task"
    landmarker_task = resolver.find_file([f"emocast/{task_name}", f"emocast/face_analysis/models/{task_name}"])
    if landmarker_task is None and "face_landmarker" in required:
        resolver.report("face_landmarker", [resolver.roots[0] / "emocast" / task_name],
                        ["emocast/face_analysis/models/"])  # fmt: skip
    return {
        "face_detector": face_found.get("scrfd_10g_bnkps.onnx"),
        "face_recognizer": face_found.get("glintr100.onnx"),
        "face_landmarks_2d106": landmarks_2d106,
        "face_landmarker_task": landmarker_task,
    }


def _first_file(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _weights_files(folder: Path) -> list[Path]:
    """Checkpoint-like files directly in ``folder`` (not in subfolders, which hold other models)."""
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES and not path.name.startswith(".")
    )  # fmt: skip


def _table_row(component: str, file_name: str) -> ModelFile:
    rows = [row for row in MODEL_TABLE if row.component == component]
    return next((row for row in rows if file_name in row.file), rows[0])


def _format_size(size_mb: float) -> str:
    if size_mb >= 100:
        return f"{size_mb:,.0f}"
    return f"{size_mb:g}" if size_mb >= 0.1 else "<0.1"

