"""Model folders: registration with ComfyUI's `folder_paths`, the choices the loader nodes list, and the
one way a loader turns a choice into a path.

What makes each model (its folders and files) is the core's `emocast_core.model_files.LAYOUTS`, the same
table the command line resolves; this module adds only what is ComfyUI's: the folders `folder_paths`
registers, the listing of choices, and the containment rule below.

`register_model_folders()` adds ``models/emocast`` (and ``models/insightface`` when no other pack did)
to `folder_paths`, keeping any paths an ``extra_model_paths.yaml`` already gave those keys. Every choice
a loader offers is ``"<folder key>/<path inside it>"``, e.g. ``"emocast/net.safetensors"`` or
``"vae/sd-vae-ft-mse"``, so the same name resolves on every machine. Nothing is ever downloaded.

Containment. A workflow is data from anyone (a shared JSON file, a POST to ``/prompt``), so a model input
is trusted only when it is one of the choices listed at that moment: `ModelInput.resolve` lists again
and looks the value up; it never joins the value onto a folder, so ``..``, ``//``, absolute paths and
the like cannot name anything. The listing walks only the folders `folder_paths` registers for the
input's keys, and lists a file or folder only when its real path (symlinks resolved) lies inside a
registered folder of the same key; a folder is listed only when every entry directly inside it does too,
since the loaders read whole folders, and a checkpoint only when the architecture files read beside it
do too. So a symlink in ``models/`` that points elsewhere is not listed. ComfyUI's own loaders would
follow such a link, but this pack cannot tell a link its owner made from one planted by something else;
storage elsewhere is added through ``extra_model_paths.yaml``, and links into any registered folder of
the same key keep working.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import folder_paths

from ..emocast_core.model_files import CHECKPOINT_CONFIG_FILES, HF_CONFIG_FILE, LAYOUTS, UNET_CONFIG_FILE, placement

EMOCAST_FOLDER = LAYOUTS["checkpoint"].top_folders[0]
INSIGHTFACE_FOLDER = LAYOUTS["face"].top_folders[0]
CHECKPOINT_EXTENSIONS = set(LAYOUTS["checkpoint"].suffixes)
NONE_CHOICE = "none"
# Offered by every loader: the synthetic demo model that ships inside emocast_core (no files needed).
DEMO_CHOICE = "demo (built-in synthetic model)"
DEMO_INPUT_FILES = {"emocast_demo_portrait.png": "portrait", "emocast_demo_speech.wav": "speech"}
MAX_DEPTH = 4  # folder levels below a registered folder that the loaders look into


def register_model_folders() -> None:
    """Idempotent; safe to call on every import."""
    for name, extensions in ((EMOCAST_FOLDER, CHECKPOINT_EXTENSIONS), (INSIGHTFACE_FOLDER, set(LAYOUTS["face"].suffixes))):
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


class ModelChoiceError(ValueError):
    """A model input that is not one of the listed choices; the message is one line for the user."""


# --- walking the registered folders -----------------------------------------------------------------------


def _real(path: Path | str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _inside(real: str, real_roots: list[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in real_roots)


def _real_roots(keys: tuple[str, ...]) -> list[str]:
    return [_real(root) for key in keys for root in folder_roots(key)]


def is_contained(path: Path, keys: tuple[str, ...]) -> bool:
    """True when ``path`` and, for a folder, every entry directly inside it resolve into a registered folder
    of ``keys``. For paths a loader derives from a listed choice (e.g. a tokenizer folder beside it)."""
    real_roots = _real_roots(keys)
    if not _inside(_real(path), real_roots):
        return False
    if path.is_dir():
        try:
            return all(_inside(_real(entry), real_roots) for entry in path.iterdir())
        except OSError:
            return False
    return True


def _listable(name: str) -> bool:
    # Hidden entries are skipped as before; control characters would break the one-line labels.
    return not name.startswith(".") and all(ord(char) >= 32 and ord(char) != 127 for char in name)


@dataclass
class _Folder:
    label: str  # "<key>/<relative path>", or just "<key>" for the registered folder itself
    path: Path
    files: dict[str, Path]  # plain files directly inside whose real path stays in the key's folders
    escaping: set[str]  # names of the entries directly inside that resolve outside the key's folders


def _walk(key: str) -> Iterator[_Folder]:
    """The folders under every registered folder of ``key``, at most `MAX_DEPTH` levels down, never
    entering one whose real path leaves the key's registered folders (so a link to ``/`` is not walked).
    The depth limit also ends link loops; a folder reached by two links inside is listed under both names."""
    real_roots = _real_roots((key,))
    for root in folder_roots(key):
        if not root.is_dir():
            continue
        stack = [(root, key, 0)]
        while stack:
            folder, label, depth = stack.pop()
            if not _inside(_real(folder), real_roots):
                continue
            try:
                entries = sorted(folder.iterdir(), reverse=True)
            except OSError:
                continue
            files, escaping = {}, set()
            for entry in entries:
                if not _inside(_real(entry), real_roots):
                    escaping.add(entry.name)
                elif not _listable(entry.name):
                    continue
                elif entry.is_dir():
                    if depth < MAX_DEPTH:
                        stack.append((entry, f"{label}/{entry.name}", depth + 1))
                elif entry.is_file():
                    files[entry.name] = entry
            yield _Folder(label, folder, dict(sorted(files.items())), escaping)


@dataclass(frozen=True)
class FileSource:
    """Files with one of ``extensions`` under the ``keys`` folders."""

    keys: tuple[str, ...]
    extensions: frozenset[str]
    # Leave out files inside Hugging Face / diffusers folders (a config.json beside them).
    skip_model_folders: bool = True
    # Only files below a folder of this name, e.g. "audio_separator".
    below: str = ""
    # Files beside it that its loader also reads ("{stem}" is its name without the extension): a file
    # is not listed when one of these leads out of the model folders.
    sidecars: tuple[str, ...] = ()

    def find(self) -> list[tuple[str, Path]]:
        found = {}
        for key in self.keys:
            for folder in _walk(key):
                if self.skip_model_folders and HF_CONFIG_FILE in folder.files:
                    continue
                if self.below and self.below not in folder.label.split("/")[1:]:
                    continue
                for name, path in folder.files.items():
                    sidecars = {sidecar.format(stem=Path(name).stem) for sidecar in self.sidecars}
                    if Path(name).suffix.lower() in self.extensions and not sidecars & folder.escaping:
                        found.setdefault(f"{folder.label}/{name}", path)
        return sorted(found.items())


@dataclass(frozen=True)
class FolderSource:
    """Folders under the ``keys`` folders holding one file of each group in ``required_files``."""

    keys: tuple[str, ...]
    required_files: tuple[tuple[str, ...], ...]

    def find(self) -> list[tuple[str, Path]]:
        found = {}
        for key in self.keys:
            for folder in _walk(key):
                if not folder.escaping and all(any(name in folder.files for name in group) for group in self.required_files):
                    found.setdefault(folder.label, folder.path)
        return sorted(found.items())


# --- the model inputs of the loader nodes -----------------------------------------------------------------

# A value is quoted back in a refusal only when it reads as a plain "<key>/<name>/..." label: anything else
# (a path outside, "..", "//", "%2e", a backslash, a control character) is not repeated.
_QUOTABLE_PART = re.compile(r"[A-Za-z0-9 _+()\[\]-][A-Za-z0-9 _.+()\[\]-]*")


def _quotable(value, keys: tuple[str, ...]) -> bool:
    if not isinstance(value, str) or len(value) > 200:
        return False
    key, _, rest = value.partition("/")
    return key in keys and all(_QUOTABLE_PART.fullmatch(part) for part in rest.split("/"))


@dataclass(frozen=True)
class ModelInput:
    """One model input of a loader node: where its choices come from, and the only way from a choice to a path."""

    name: str  # the node input, for messages
    sources: tuple[FileSource | FolderSource, ...]
    advice: str  # where the model goes, for the refusal line
    placeholder: str | None = None  # listed when nothing is found (a combo needs one entry); refused if chosen
    before: tuple[str, ...] = ()  # choices that name no file, listed first
    after: tuple[str, ...] = (DEMO_CHOICE,)  # ... and last

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key for source in self.sources for key in source.keys))

    def found(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for source in self.sources:
            for label, path in source.find():
                found.setdefault(label, path)
        return found

    def choices(self) -> list[str]:
        labels = list(self.found()) or ([self.placeholder] if self.placeholder else [])
        return [*self.before, *labels, *self.after]

    def is_builtin(self, value) -> bool:
        """A choice that names no file (the demo model, none, auto)."""
        return value in self.before or value in self.after

    def problem(self, value) -> str | None:
        """None when ``value`` is a listed choice, else the one-line refusal."""
        if isinstance(value, str) and (self.is_builtin(value) or value in self.found()):
            return None
        return self.refusal(value)

    def resolve(self, value) -> Path:
        """The path of a listed file/folder choice; `ModelChoiceError` for anything else."""
        path = self.found().get(value) if isinstance(value, str) else None
        if path is None:
            raise ModelChoiceError(self.refusal(value))
        return path

    def refusal(self, value) -> str:
        # Names only the input and the model folders: never the value's target, nor whether it exists.
        named = repr(value) if _quotable(value, self.keys) else "this value"
        return (f"{self.name}: {named} is not one of the models listed for this input. {self.advice} "
                "(or in a folder extra_model_paths.yaml adds for it), refresh the page (R) and pick it from the list.")


def _files(layout_name: str, **options) -> FileSource:
    """A single-file model of the core's layout, listed from every registered folder of its keys."""
    layout = LAYOUTS[layout_name]
    return FileSource(layout.top_folders, frozenset(layout.suffixes), **options)


def _folders(*layout_names: str) -> FolderSource:
    """A model folder of the core's layout (the first one's files), listed from the keys of them all."""
    keys = tuple(dict.fromkeys(key for name in layout_names for key in LAYOUTS[name].top_folders))
    return FolderSource(keys, LAYOUTS[layout_names[0]].files)


CHECKPOINT = ModelInput(
    # The architecture files `emocast_core.loading.checkpoint_config` reads beside a checkpoint.
    "checkpoint", (_files("checkpoint", sidecars=(*CHECKPOINT_CONFIG_FILES, UNET_CONFIG_FILE)),),
    f"Put the EmoCAST weights (any .safetensors or .pth name) as {placement('checkpoint')}",
    placeholder="emocast/net.safetensors (missing)",
)
VAE = ModelInput(
    "vae", (_folders("vae"),),
    f"Put the sd-vae-ft-mse diffusers folder as {placement('vae')} or under models/emocast/",
    placeholder="vae/sd-vae-ft-mse (missing)",
)
TEXT_ENCODER = ModelInput(
    "text_encoder", (_files("text_encoder_file"), _folders("text_encoder_folder")),
    f"Put {placement('text_encoder')}, or a clip-vit-large-patch14 folder in models/text_encoders/",
    placeholder="text_encoders/clip_l.safetensors (missing)",
)
TOKENIZER = ModelInput(
    "tokenizer", (_folders("tokenizer", "text_encoder_folder"),),
    f"Choose auto, or put {placement('text_encoder')}",
    before=("auto", "comfyui sd1_tokenizer"), after=(),
)
AUDIO_ENCODER = ModelInput(
    "wav2vec2", (_folders("audio_encoder"),),
    f"Put the wav2vec2-base-960h folder as {placement('audio_encoder')} or under models/emocast/",
    placeholder="audio_encoders/wav2vec2-base-960h (missing)",
)
VOCAL_SEPARATOR = ModelInput(
    "vocal_separator", (_files("vocal_separator", skip_model_folders=False,
                               below=LAYOUTS["vocal_separator"].folders[0].split("/")[-1]),),
    f"Choose none, or put an MDX-Net model such as {placement('vocal_separator')}",
    before=(NONE_CHOICE,), after=(),
)
FACE_MODELS = ModelInput(
    "face_models", (_folders("face"),),
    f"Put the antelopev2 face models as {placement('face')}",
    placeholder="insightface/models/antelopev2 (missing)",
)


def check_choices(*inputs: tuple[ModelInput, object]) -> bool | str:
    """Validation result for ComfyUI: True, or one line per input that is not a listed choice. ``None``
    (an input fed by a link, unknown before the run) is checked when the node runs."""
    problems = [model_input.problem(value) for model_input, value in inputs if value is not None]
    problems = [problem for problem in problems if problem]
    return " ".join(problems) if problems else True


# --- the output folder ------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def output_prefix_problem(prefix) -> str | None:
    """None when ``filename_prefix`` names a file inside ComfyUI's output folder, else the one-line refusal.

    Stricter than ComfyUI's `folder_paths.get_save_image_path` (which refuses a folder outside the output
    directory only when saving, after all the work): no absolute path, drive letter, ``..``, ``.`` or empty
    part, with ``/`` and ``\\`` both read as separators so a prefix means the same on every system."""
    example = "e.g. EmoCAST/emocast"
    if not isinstance(prefix, str) or not prefix.strip():
        return f"filename_prefix: empty; give a file name inside ComfyUI's output folder, {example}"
    if any(ord(char) < 32 or ord(char) == 127 for char in prefix):
        return f"filename_prefix: contains control characters; use a plain name, {example}"
    if prefix.startswith(("/", "\\")) or _DRIVE.match(prefix):
        return f"filename_prefix: must be relative to ComfyUI's output folder (no leading / or drive letter), {example}"
    if any(part in ("", ".", "..") for part in re.split(r"[\\/]", prefix)):
        return f"filename_prefix: '..', '.' and empty parts ('//', a trailing '/') are not allowed; {example}"
    output_dir = os.path.abspath(folder_paths.get_output_directory())
    folder = os.path.abspath(os.path.join(output_dir, os.path.dirname(os.path.normpath(prefix))))
    if os.path.commonpath((output_dir, folder)) != output_dir:  # ComfyUI's own rule, for whatever is left
        return f"filename_prefix: leaves ComfyUI's output folder; {example}"
    return None


# --- other files ------------------------------------------------------------------------------------------


def comfy_sd1_tokenizer() -> Path:
    # `comfy` is a namespace package (no __init__.py, so no __file__): find the folder from a module in it.
    import comfy.sd1_clip

    return Path(comfy.sd1_clip.__file__).parent / "sd1_tokenizer"


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
