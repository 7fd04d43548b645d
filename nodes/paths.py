"""Model folders: registration with ComfyUI's `folder_paths` and the choices the loader nodes list.

`register_model_folders()` adds ``models/emocast`` (and ``models/insightface`` when no other pack did)
to `folder_paths`, keeping any paths an ``extra_model_paths.yaml`` already gave those keys. Every choice
a loader offers is ``"<folder key>/<path inside it>"``, e.g. ``"emocast/net.safetensors"`` or
``"vae/sd-vae-ft-mse"``, so the same name resolves on every machine. Nothing is ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

EMOCAST_FOLDER = "emocast"
INSIGHTFACE_FOLDER = "insightface"
CHECKPOINT_EXTENSIONS = {".safetensors", ".pth"}
NONE_CHOICE = "none"
# Offered by every loader: the synthetic demo model that ships inside emocast_core (no files needed).
DEMO_CHOICE = "demo (built-in synthetic model)"
DEMO_INPUT_FILES = {"emocast_demo_portrait.png": "portrait", "emocast_demo_speech.wav": "speech"}


def register_model_folders() -> None:
    """Idempotent; safe to call on every import."""
    for name, extensions in ((EMOCAST_FOLDER, CHECKPOINT_EXTENSIONS), (INSIGHTFACE_FOLDER, {".onnx"})):
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, known = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            folder_paths.folder_names_and_paths[name] = (paths, set(known) | extensions if known else extensions)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


def folder_roots(key: str) -> list[Path]:
    try:
        return [Path(path) for path in folder_paths.get_folder_paths(key)]
    except KeyError:
        return []


def _walk_dirs(root: Path, max_depth: int = 4):
    if not root.is_dir():
        return
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        yield folder
        if depth < max_depth:
            try:
                children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)
            except OSError:
                continue
            stack.extend((child, depth + 1) for child in children)


def _label(key: str, root: Path, path: Path) -> str:
    relative = path.relative_to(root).as_posix()
    return key if relative == "." else f"{key}/{relative}"


def find_folders(keys: tuple[str, ...], required_files: tuple[tuple[str, ...], ...]) -> list[str]:
    """Labels of folders under the ``keys`` folders holding one file of each group in ``required_files``."""
    found = []
    for key in keys:
        for root in folder_roots(key):
            for folder in _walk_dirs(root):
                if all(any((folder / name).is_file() for name in names) for names in required_files):
                    found.append(_label(key, root, folder))
    return sorted(dict.fromkeys(found))


def find_files(keys: tuple[str, ...], extensions: set[str], skip_model_folders: bool = True) -> list[str]:
    """Labels of files with one of ``extensions`` under the ``keys`` folders. ``skip_model_folders`` leaves
    out files inside Hugging Face / diffusers folders (a ``config.json`` beside them)."""
    found = []
    for key in keys:
        for root in folder_roots(key):
            for folder in _walk_dirs(root):
                if skip_model_folders and (folder / "config.json").is_file():
                    continue
                try:
                    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in extensions)
                except OSError:
                    continue
                found.extend(_label(key, root, path) for path in files if not path.name.startswith("."))
    return sorted(dict.fromkeys(found))


def resolve(label: str) -> Path:
    """The path a ``"<folder key>/<relative path>"`` choice names; FileNotFoundError naming where it was looked for."""
    key, _, relative = label.partition("/")
    roots = folder_roots(key)
    for root in roots:
        candidate = root / relative if relative else root
        if candidate.exists():
            return candidate
    looked = ", ".join(str(root / relative) for root in roots) or f"(no '{key}' model folder is registered)"
    raise FileNotFoundError(f"{label!r} not found; looked in: {looked}. Nothing is downloaded automatically.")


def or_placeholder(choices: list[str], placeholder: str) -> list[str]:
    """A combo needs at least one entry; an empty folder shows what to install instead."""
    return choices if choices else [placeholder]


def checkpoint_choices() -> list[str]:
    return or_placeholder(find_files((EMOCAST_FOLDER,), CHECKPOINT_EXTENSIONS), "emocast/net.safetensors (missing)") + [DEMO_CHOICE]


def vae_choices() -> list[str]:
    files = (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))
    return or_placeholder(find_folders(("vae", EMOCAST_FOLDER), files), "vae/sd-vae-ft-mse (missing)") + [DEMO_CHOICE]


def text_encoder_choices() -> list[str]:
    singles = find_files(("text_encoders",), {".safetensors"})
    hf = find_folders(("text_encoders", EMOCAST_FOLDER), (("config.json",), ("model.safetensors", "pytorch_model.bin"), ("vocab.json",)))
    return or_placeholder(singles + hf, "text_encoders/clip_l.safetensors (missing)") + [DEMO_CHOICE]


def tokenizer_choices() -> list[str]:
    return ["auto", "comfyui sd1_tokenizer"] + find_folders(("text_encoders", EMOCAST_FOLDER), (("vocab.json",), ("merges.txt",)))


def audio_encoder_choices() -> list[str]:
    files = (("config.json",), ("model.safetensors", "pytorch_model.bin"), ("preprocessor_config.json",))
    return or_placeholder(find_folders(("audio_encoders", EMOCAST_FOLDER), files),
                          "audio_encoders/wav2vec2-base-960h (missing)") + [DEMO_CHOICE]


def vocal_separator_choices() -> list[str]:
    files = find_files((EMOCAST_FOLDER,), {".onnx"}, skip_model_folders=False)
    return [NONE_CHOICE] + [label for label in files if "/audio_separator/" in label]


def face_model_choices() -> list[str]:
    files = (("scrfd_10g_bnkps.onnx",), ("glintr100.onnx",))
    return or_placeholder(find_folders((INSIGHTFACE_FOLDER, EMOCAST_FOLDER), files),
                          "insightface/models/antelopev2 (missing)") + [DEMO_CHOICE]


def comfy_sd1_tokenizer() -> Path:
    import comfy

    return Path(comfy.__file__).parent / "sd1_tokenizer"


def copy_demo_inputs() -> None:
    """Put the demo's sample portrait and speech in ComfyUI's input folder (once), so the demo
    workflows' LoadImage / LoadAudio nodes find them."""
    import shutil

    from ..emocast_core.demo.bundle import DemoBundle

    bundle = DemoBundle()
    input_dir = Path(folder_paths.get_input_directory())
    for name, attribute in DEMO_INPUT_FILES.items():
        target = input_dir / name
        source = getattr(bundle, attribute)
        if not target.exists() and source.is_file():
            input_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
