"""Hostile model-input strings and the folder trees they are tried on, shared by the in-process tests
(`test_nodes_paths.py`) and the real-server tests (`test_comfyui_paths.py`).

`HOSTILE` is the one table of cases: name -> value(loader input, outside folder). A case added there is
tried on every model input of every loader (`LOADER_INPUTS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SENTINEL = b"SENTINEL: this file lies outside every model folder"


# --- a model tree, a decoy outside it, and links out of it --------------------------------------------------

# Every file name any folder loader requires: a folder holding all of them would be listed by every one.
FOLDER_MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "model.safetensors", "vocab.json",
                      "merges.txt", "preprocessor_config.json", "scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx")
KEYS = ("emocast", "vae", "text_encoders", "audio_encoders", "insightface")


def write_outside(outside: Path) -> None:
    """Decoys outside the model folders that every loader would accept if a path could reach them."""
    (outside / "decoy").mkdir(parents=True)
    (outside / "audio_separator").mkdir()
    for path in (outside / "decoy.safetensors", outside / "decoy.onnx", outside / "audio_separator" / "decoy.onnx",
                 *(outside / "decoy" / name for name in FOLDER_MODEL_FILES)):
        path.write_bytes(SENTINEL)


def write_escapes(models: Path, outside: Path, link_to_root: bool = True) -> None:
    """In every model folder: links that point out of it, a link to ``/``, and a model folder one of whose
    files is a link out. None of them may be listed or loaded. (A real server gets no link to ``/``:
    ComfyUI's own model listing follows folder links, and would walk the whole file system.)"""
    for key in KEYS:
        root = models / key
        root.mkdir(parents=True, exist_ok=True)
        (root / "escape_link").symlink_to(outside / "decoy", target_is_directory=True)
        (root / "escape_link.safetensors").symlink_to(outside / "decoy.safetensors")
        (root / "escape_link.onnx").symlink_to(outside / "decoy.onnx")
        (root / "escape_dir").symlink_to(outside, target_is_directory=True)
        if link_to_root:
            (root / "rootlink").symlink_to("/", target_is_directory=True)
        half = root / "half_linked"
        half.mkdir()
        for name in FOLDER_MODEL_FILES:
            (half / name).write_bytes(b"{}")
        (half / "weights_elsewhere.bin").symlink_to(outside / "decoy.safetensors")
    # A real checkpoint whose architecture file beside it (read with it) is a link out.
    (models / "emocast" / "escape_sidecar.safetensors").write_bytes(b"{}")
    (models / "emocast" / "escape_sidecar.json").symlink_to(outside / "decoy" / "config.json")
    separators = models / "emocast" / "audio_separator"
    separators.mkdir(parents=True, exist_ok=True)
    (separators / "escape_link.onnx").symlink_to(outside / "decoy.onnx")


def write_fake_models(models: Path, extra_vae: Path, outside: Path) -> dict[str, Path]:
    """Files with the right names (the listing looks only at names; nothing here is loaded)."""
    def files(folder: Path, *names: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(b"{}")
        return folder

    files(models / "emocast", "net.safetensors")
    files(models / "emocast" / "audio_separator", "Kim_Vocal_2.onnx")
    (models / "emocast" / "linked_inside.safetensors").symlink_to(models / "emocast" / "net.safetensors")
    shared = files(extra_vae / "shared-vae", "config.json", "diffusion_pytorch_model.safetensors")
    (models / "vae").mkdir(parents=True, exist_ok=True)
    (models / "vae" / "linked_to_extra").symlink_to(shared, target_is_directory=True)
    # A text encoder whose "<name>_tokenizer" beside it is a link out: `auto` must not take it.
    files(models / "text_encoders", "lonely.safetensors")
    (models / "text_encoders" / "lonely_tokenizer").symlink_to(outside / "decoy", target_is_directory=True)
    return {
        "text_encoders/lonely.safetensors": models / "text_encoders" / "lonely.safetensors",
        "emocast/net.safetensors": models / "emocast" / "net.safetensors",
        "emocast/linked_inside.safetensors": models / "emocast" / "linked_inside.safetensors",
        "emocast/audio_separator/Kim_Vocal_2.onnx": files(models / "emocast" / "audio_separator") / "Kim_Vocal_2.onnx",
        "vae/sd-vae-ft-mse": files(models / "vae" / "sd-vae-ft-mse", "config.json", "diffusion_pytorch_model.safetensors"),
        "vae/linked_to_extra": models / "vae" / "linked_to_extra",
        "vae/shared-vae": shared,
        "text_encoders/clip_l.safetensors": files(models / "text_encoders", "clip_l.safetensors") / "clip_l.safetensors",
        "text_encoders/clip_l_tokenizer": files(models / "text_encoders" / "clip_l_tokenizer", "vocab.json", "merges.txt"),
        "audio_encoders/wav2vec2-base-960h": files(models / "audio_encoders" / "wav2vec2-base-960h", "config.json",
                                                   "model.safetensors", "preprocessor_config.json"),
        "insightface/models/antelopev2": files(models / "insightface" / "models" / "antelopev2", "scrfd_10g_bnkps.onnx",
                                               "glintr100.onnx", "2d106det.onnx"),
    }


# --- the table: every model input, every hostile string ----------------------------------------------------


@dataclass(frozen=True)
class LoaderInput:
    node_id: str
    name: str
    key: str  # the folder key its choices start with
    where: str  # the label prefix its listing reads (deeper for the vocal separator)
    decoy: str  # the decoy outside that this input would accept, relative to the outside folder
    legit: str  # a listed choice
    other_inputs: dict  # the node's other inputs for execute(): choices that need no files


DEMO = "demo (built-in synthetic model)"
LOADER_INPUTS = [
    LoaderInput("EmoCASTModelLoader", "checkpoint", "emocast", "emocast", "decoy.safetensors",
                "emocast/net.safetensors", {"vae": DEMO, "precision": "fp32"}),
    LoaderInput("EmoCASTModelLoader", "vae", "vae", "vae", "decoy", "vae/sd-vae-ft-mse",
                {"checkpoint": DEMO, "precision": "fp32"}),
    LoaderInput("EmoCASTTextEncoderLoader", "text_encoder", "text_encoders", "text_encoders", "decoy.safetensors",
                "text_encoders/clip_l.safetensors", {"tokenizer": "auto"}),
    LoaderInput("EmoCASTTextEncoderLoader", "tokenizer", "text_encoders", "text_encoders", "decoy",
                "text_encoders/clip_l_tokenizer", {"text_encoder": DEMO}),
    LoaderInput("EmoCASTAudioEncoderLoader", "wav2vec2", "audio_encoders", "audio_encoders", "decoy",
                "audio_encoders/wav2vec2-base-960h", {"precision": "fp32", "vocal_separator": "none"}),
    LoaderInput("EmoCASTAudioEncoderLoader", "vocal_separator", "emocast", "emocast/audio_separator",
                "audio_separator/decoy.onnx", "emocast/audio_separator/Kim_Vocal_2.onnx",
                {"wav2vec2": DEMO, "precision": "fp32"}),
    LoaderInput("EmoCASTFaceAnalyzerLoader", "face_models", "insightface", "insightface", "decoy",
                "insightface/models/antelopev2", {"onnx_device": "cpu"}),
]


def deep_dots(n: int = 16) -> str:
    return "../" * n


# name -> value(loader input, outside folder). Add a case here and every loader input is tried with it.
HOSTILE = {
    "double slash + absolute path": lambda i, out: f"{i.key}/{out / i.decoy}",
    "double slash /etc/passwd": lambda i, out: f"{i.key}//etc/passwd",
    "dot-dot to the decoy": lambda i, out: f"{i.where}/{deep_dots()}{str(out / i.decoy).lstrip('/')}",
    "dot-dot /etc/passwd": lambda i, out: f"{i.key}/../../../etc/passwd",
    "bare dot-dot": lambda i, out: f"{i.key}/..",
    "dot-dot twice": lambda i, out: f"{i.key}/../..",
    "dot segments around a listed name": lambda i, out: i.legit.replace("/", "/./", 1),
    "absolute path of the decoy": lambda i, out: str(out / i.decoy),
    "absolute /etc/passwd": lambda i, out: "/etc/passwd",
    "percent-encoded dot-dot": lambda i, out: f"{i.key}/{'%2e%2e/' * 16}{str(out / i.decoy).lstrip('/')}",
    "percent-encoded slashes": lambda i, out: f"{i.key}%2f..%2f..%2fetc%2fpasswd",
    "backslashes": lambda i, out: f"{i.key}\\" + "..\\" * 16 + str(out / i.decoy).lstrip("/").replace("/", "\\"),
    "NUL byte after a listed name": lambda i, out: f"{i.legit}\x00/{deep_dots()}{out / i.decoy}",
    "newline after a listed name": lambda i, out: f"{i.legit}\nsecond line",
    "symlink to the decoy": lambda i, out: f"{i.where}/escape_link{Path(i.decoy).suffix}",
    "symlinked folder to the outside": lambda i, out: f"{i.key}/escape_dir/{i.decoy}",
    "symlink to /": lambda i, out: f"{i.key}/rootlink/etc/passwd",
    "model folder with a file linked out": lambda i, out: f"{i.key}/half_linked",
    "checkpoint whose architecture file links out": lambda i, out: f"{i.where}/escape_sidecar{Path(i.legit).suffix}",
    "name not in the list": lambda i, out: f"{i.where}/not_there{Path(i.legit).suffix}",
    "another folder key": lambda i, out: f"loras/../../{out.name}/{i.decoy}",
    "empty string": lambda i, out: "",
    "home folder": lambda i, out: "~/.ssh/id_rsa",
    "file URL": lambda i, out: "file:///etc/passwd",
    "windows drive": lambda i, out: "C:\\Windows\\win.ini",
    "windows share": lambda i, out: "\\\\server\\share\\model.safetensors",
    "very long": lambda i, out: f"{i.key}/{'a/' * 3000}x",
}
