"""The loader nodes read only models listed in ComfyUI's model folders, and the video node writes only
inside ComfyUI's output folder, whatever string a workflow carries.

Two halves:

- In process, against ComfyUI's real `folder_paths`: every hostile string of `HOSTILE` x every model input
  of every loader is refused by ``validate_inputs`` and again by ``execute`` with one line that names the
  input and says nothing about the target, while an audit hook checks that nothing outside the model
  folders was opened or listed and the model-loading code is never reached. Needs ComfyUI importable:
  ``COMFYUI_DIR=/path/to/comfy /path/to/comfy/venv/bin/python -m pytest tests/test_comfyui_paths.py``.
- Through a real server's ``POST /prompt`` (needs ``COMFYUI_DIR`` with ``ComfyUI/`` and ``venv/``): hostile
  values come back as node errors at validation, and nothing runs.

Without ComfyUI each half skips.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import comfy_fixtures as cf
import pytest

REPO = Path(__file__).resolve().parents[1]
SENTINEL = b"SENTINEL: this file lies outside every model folder"

pytestmark = [pytest.mark.comfyui]


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


def _deep(n: int = 16) -> str:
    return "../" * n


# name -> value(loader input, outside folder). Add a case here and every loader input is tried with it.
HOSTILE = {
    "double slash + absolute path": lambda i, out: f"{i.key}/{out / i.decoy}",
    "double slash /etc/passwd": lambda i, out: f"{i.key}//etc/passwd",
    "dot-dot to the decoy": lambda i, out: f"{i.where}/{_deep()}{str(out / i.decoy).lstrip('/')}",
    "dot-dot /etc/passwd": lambda i, out: f"{i.key}/../../../etc/passwd",
    "bare dot-dot": lambda i, out: f"{i.key}/..",
    "dot-dot twice": lambda i, out: f"{i.key}/../..",
    "dot segments around a listed name": lambda i, out: i.legit.replace("/", "/./", 1),
    "absolute path of the decoy": lambda i, out: str(out / i.decoy),
    "absolute /etc/passwd": lambda i, out: "/etc/passwd",
    "percent-encoded dot-dot": lambda i, out: f"{i.key}/{'%2e%2e/' * 16}{str(out / i.decoy).lstrip('/')}",
    "percent-encoded slashes": lambda i, out: f"{i.key}%2f..%2f..%2fetc%2fpasswd",
    "backslashes": lambda i, out: f"{i.key}\\" + "..\\" * 16 + str(out / i.decoy).lstrip("/").replace("/", "\\"),
    "NUL byte after a listed name": lambda i, out: f"{i.legit}\x00/{_deep()}{out / i.decoy}",
    "newline after a listed name": lambda i, out: f"{i.legit}\nsecond line",
    "symlink to the decoy": lambda i, out: f"{i.where}/escape_link{Path(i.decoy).suffix}",
    "symlinked folder to the outside": lambda i, out: f"{i.key}/escape_dir/{i.decoy}",
    "symlink to /": lambda i, out: f"{i.key}/rootlink/etc/passwd",
    "model folder with a file linked out": lambda i, out: f"{i.key}/half_linked",
    "name not in the list": lambda i, out: f"{i.where}/not_there{Path(i.legit).suffix}",
    "another folder key": lambda i, out: f"loras/../../{out.name}/{i.decoy}",
    "empty string": lambda i, out: "",
    "home folder": lambda i, out: "~/.ssh/id_rsa",
    "file URL": lambda i, out: "file:///etc/passwd",
    "windows drive": lambda i, out: "C:\\Windows\\win.ini",
    "windows share": lambda i, out: "\\\\server\\share\\model.safetensors",
    "very long": lambda i, out: f"{i.key}/{'a/' * 3000}x",
}


# --- in process ---------------------------------------------------------------------------------------------


def _import_comfyui():
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if comfy_dir and str(Path(comfy_dir) / "ComfyUI") not in sys.path:
        sys.path.insert(0, str(Path(comfy_dir) / "ComfyUI"))
    try:
        from comfy.cli_args import args

        args.cpu = True  # before comfy.model_management picks a device
        # comfy.model_patcher, which the loaders import, also needs torchvision.
        for module in ("comfy.model_management", "comfy.model_patcher", "comfy_api.latest"):
            importlib.import_module(module)
        import folder_paths
    except Exception as error:  # noqa: BLE001  (ImportError, or any failure of a missing ComfyUI dependency)
        pytest.skip(f"ComfyUI is not importable here ({type(error).__name__}: {error}); set COMFYUI_DIR and run "
                    "pytest with ComfyUI's Python")
    return folder_paths


class FileAccessLog:
    """Paths opened or listed while recording (Python audit events; a hook cannot be removed, so it
    records only between `start` and `stop`)."""

    events = ("open", "os.listdir", "os.scandir")

    def __init__(self):
        self.paths: list[str] = []
        self.recording = False
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if self.recording and event in self.events and args and isinstance(args[0], (str, bytes, os.PathLike)):
            self.paths.append(os.fsdecode(args[0]))

    def start(self):
        self.paths, self.recording = [], True

    def stop(self) -> list[str]:
        self.recording = False
        return self.paths

    @staticmethod
    def outside(paths: list[str], outside: Path) -> list[str]:
        """The paths that reach the outside folder, the file-system root, or /etc."""
        real_outside = os.path.realpath(outside)
        hits = []
        for path in paths:
            real = os.path.realpath(path)
            if real == "/" or real.startswith(("/etc", real_outside)):
                hits.append(path)
        return hits


@pytest.fixture(scope="module")
def access_log():
    return FileAccessLog()


@pytest.fixture(scope="module")
def comfy_folders():
    return _import_comfyui()


@pytest.fixture(scope="module")
def nodes(comfy_folders):
    module = sys.modules.get("emocast_pack")
    if module is None:
        spec = importlib.util.spec_from_file_location("emocast_pack", REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["emocast_pack"] = module
        spec.loader.exec_module(module)
    extension = asyncio.run(module.comfy_entrypoint())
    return {node.GET_SCHEMA().node_id: node for node in asyncio.run(extension.get_node_list())}


@pytest.fixture(scope="module")
def paths_module(nodes):
    return sys.modules["emocast_pack.nodes.paths"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, comfy_folders, nodes):
    """Only this tree's folders are registered for the model keys while the module runs."""
    root = tmp_path_factory.mktemp("paths")
    models, outside, extra_vae = root / "models", root / "outside_sentinel_area", root / "extra" / "vae"
    write_outside(outside)
    legit = write_fake_models(models, extra_vae, outside)
    write_escapes(models, outside)
    (root / "output").mkdir()
    saved = {key: comfy_folders.folder_names_and_paths.get(key) for key in KEYS}
    for key in KEYS:
        extensions = saved[key][1] if saved[key] else set()
        comfy_folders.folder_names_and_paths[key] = ([str(models / key)], set(extensions))
    comfy_folders.folder_names_and_paths["vae"][0].append(str(extra_vae))
    previous_output = comfy_folders.get_output_directory()
    comfy_folders.set_output_directory(str(root / "output"))
    yield {"root": root, "models": models, "outside": outside, "legit": legit}
    comfy_folders.set_output_directory(previous_output)
    for key, value in saved.items():
        if value is None:
            comfy_folders.folder_names_and_paths.pop(key, None)
        else:
            comfy_folders.folder_names_and_paths[key] = value


def _choices(nodes, loader: LoaderInput) -> list[str]:
    return next(item for item in nodes[loader.node_id].GET_SCHEMA().inputs if item.id == loader.name).options


@pytest.fixture
def unreachable_loading(nodes, monkeypatch):
    """Replace everything in the loader module that reads model files: reaching it fails the test."""
    loaders = sys.modules["emocast_pack.nodes.loaders"]

    class Unreachable:
        def __init__(self, name):
            self.name = name

        def __call__(self, *args, **kwargs):
            raise AssertionError(f"model loading code reached: {self.name}")

        def __getattr__(self, attribute):
            raise AssertionError(f"model loading code reached: {self.name}.{attribute}")

    for name in ("load_emocast_net", "load_vae", "checkpoint_config", "EmotionTextEncoder", "MiniLMEmotionEncoder",
                 "AudioEncoder", "FaceAnalyzer", "demo_face_analyzer"):
        monkeypatch.setattr(loaders, name, Unreachable(name))


def test_listings_hold_the_models_and_nothing_that_leads_out(nodes, tree):
    legit = tree["legit"]
    for loader in LOADER_INPUTS:
        choices = _choices(nodes, loader)
        assert loader.legit in choices, (loader.name, choices)
        assert not [c for c in choices if any(bad in c for bad in ("escape", "rootlink", "half_linked", "decoy"))], choices
    # Links that stay inside a registered folder of the same key are followed, as ComfyUI does.
    checkpoint = next(loader for loader in LOADER_INPUTS if loader.name == "checkpoint")
    vae = next(loader for loader in LOADER_INPUTS if loader.name == "vae")
    assert "emocast/linked_inside.safetensors" in _choices(nodes, checkpoint)
    assert {"vae/linked_to_extra", "vae/shared-vae"} <= set(_choices(nodes, vae))
    assert set(legit) >= {c for loader in LOADER_INPUTS for c in _choices(nodes, loader) if "/" in c and "(" not in c}


def test_listed_choices_and_built_in_choices_validate(nodes, tree, paths_module):
    legit = tree["legit"]
    for loader in LOADER_INPUTS:
        for choice in _choices(nodes, loader):
            assert nodes[loader.node_id].validate_inputs(**{loader.name: choice}) is True, (loader.name, choice)
    inputs = {loader.name: loader for loader in LOADER_INPUTS}
    by_name = {"checkpoint": paths_module.CHECKPOINT, "vae": paths_module.VAE, "text_encoder": paths_module.TEXT_ENCODER,
               "tokenizer": paths_module.TOKENIZER, "wav2vec2": paths_module.AUDIO_ENCODER,
               "vocal_separator": paths_module.VOCAL_SEPARATOR, "face_models": paths_module.FACE_MODELS}
    for name, model_input in by_name.items():
        assert model_input.resolve(inputs[name].legit) == legit[inputs[name].legit]
    assert paths_module.VAE.resolve("vae/shared-vae") == legit["vae/shared-vae"]
    assert nodes["EmoCASTModelLoader"].validate_inputs(checkpoint=DEMO, vae=DEMO) is True
    assert nodes["EmoCASTTextEncoderLoader"].validate_inputs(text_encoder=DEMO, tokenizer="comfyui sd1_tokenizer") is True
    assert nodes["EmoCASTAudioEncoderLoader"].validate_inputs(wav2vec2=DEMO, vocal_separator="none") is True
    assert nodes["EmoCASTFaceAnalyzerLoader"].validate_inputs(face_models=DEMO) is True


def test_auto_tokenizer_beside_the_encoder_stays_inside(nodes, tree):
    loaders, text_encoders = sys.modules["emocast_pack.nodes.loaders"], tree["models"] / "text_encoders"
    assert loaders._tokenizer_beside(text_encoders / "clip_l.safetensors") == text_encoders / "clip_l_tokenizer"
    # lonely_tokenizer/ leads out: skipped for the next candidate, the shared clip_l_tokenizer/.
    assert loaders._tokenizer_beside(text_encoders / "lonely.safetensors") == text_encoders / "clip_l_tokenizer"


def test_a_missing_model_is_named_with_where_to_put_it(nodes, tree):
    message = nodes["EmoCASTModelLoader"].validate_inputs(checkpoint="emocast/net_v2.safetensors", vae="vae/sd-vae-ft-mse")
    assert message.startswith("checkpoint: 'emocast/net_v2.safetensors' is not one of the models listed")
    assert "models/emocast/" in message and "\n" not in message


def _refusal_shape(message, loader: LoaderInput, value, tree) -> None:
    assert isinstance(message, str), message
    assert "\n" not in message and "\x00" not in message
    assert message.startswith(f"{loader.name}: ")
    outside = tree["outside"]
    assert str(outside) not in message and outside.name not in message and "SENTINEL" not in message
    assert "decoy" not in message.replace(repr(value), "") and "passwd" not in message.replace(repr(value), "")


@pytest.mark.parametrize("hostile", list(HOSTILE))
@pytest.mark.parametrize("loader", LOADER_INPUTS, ids=lambda loader: loader.name)
def test_hostile_value_is_refused_at_validation_and_at_run_time(loader, hostile, nodes, tree, access_log,
                                                                unreachable_loading):
    value = HOSTILE[hostile](loader, tree["outside"])
    node = nodes[loader.node_id]
    # Every refusal reads the same whatever the value names (an existing file, a link, nothing at all),
    # apart from quoting the value itself when it reads as a plain label.
    baseline = node.validate_inputs(**{loader.name: "\x00"})

    from comfy_api.latest import io

    access_log.start()
    try:
        message = node.validate_inputs(**{loader.name: value})
        with pytest.raises(ValueError) as refused:
            node.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(**{loader.name: value}, **loader.other_inputs)
    finally:
        accessed = access_log.stop()

    _refusal_shape(message, loader, value, tree)
    assert message.replace(repr(value), "this value") == baseline
    assert str(refused.value) == message
    assert not FileAccessLog.outside(accessed, tree["outside"]), accessed


@pytest.mark.parametrize("value", [None, 42, ["1", 0], b"emocast/net.safetensors"])
def test_values_that_are_not_strings_are_refused_at_run_time(value, nodes, tree, unreachable_loading):
    from comfy_api.latest import io

    loader = LOADER_INPUTS[0]
    with pytest.raises(ValueError, match=r"^checkpoint: this value is not one of the models listed"):
        nodes[loader.node_id].PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(
            checkpoint=value, **loader.other_inputs)


BAD_PREFIXES = ["/tmp/emocast", "../emocast", "EmoCAST/../../emocast", "EmoCAST/..", "..", ".", "EmoCAST//emocast",
                "EmoCAST/", "C:\\emocast", "c:emocast", "\\\\server\\share\\emocast", "\\emocast",
                "EmoCAST\\..\\..\\emocast", "", "   ", "Emo\x00CAST", "EmoCAST/\nemocast", "./emocast"]
GOOD_PREFIXES = ["EmoCAST/emocast", "emocast", "a/b/c/clip", "%year%-%month%/emocast", "EmoCAST/take 2 (happy)"]


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_a_prefix_that_leaves_the_output_folder_is_refused_before_any_work(prefix, nodes, tree):
    import torch
    from comfy_api.latest import io

    node = nodes["EmoCASTVideoCombine"]
    message = node.validate_inputs(filename_prefix=prefix)
    assert isinstance(message, str) and message.startswith("filename_prefix: ") and "\n" not in message
    before = sorted(tree["root"].rglob("*"))
    with pytest.raises(ValueError, match=r"^filename_prefix: "):
        node.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(
            images=torch.zeros(2, 8, 8, 3), fps=25.0, filename_prefix=prefix, crf=23)
    assert sorted(tree["root"].rglob("*")) == before  # nothing written, no folder made


@pytest.mark.parametrize("prefix", GOOD_PREFIXES)
def test_prefixes_inside_the_output_folder_are_accepted(prefix, nodes, tree):
    assert nodes["EmoCASTVideoCombine"].validate_inputs(filename_prefix=prefix) is True


# --- a real server ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, oracle_dir):
    comfy_dir = cf.comfyui_dir_or_skip()
    root = tmp_path_factory.mktemp("comfyui_paths")
    models = cf.build_models_tree(root, oracle_dir)
    cf.write_inputs(root / "input", 0.3)
    outside = root / "outside_sentinel_area"
    write_outside(outside)
    write_escapes(models, outside, link_to_root=False)
    running = cf.comfyui_server(comfy_dir, root, REPO)
    instance = next(running)
    instance.outside = outside
    try:
        yield instance
    finally:
        running.close()  # stops the server


def _basic_prompt(**changes) -> dict:
    """The basic workflow on the tiny models, with ``changes``: {"<class_type>.<input>": value}."""
    prompt = json.loads((REPO / "workflows" / "api" / "emocast_basic.api.json").read_text())
    for node in prompt.values():
        node["inputs"].update(cf.TINY_OVERRIDES.get(node["class_type"], {}))
        for key, value in changes.items():
            class_type, _, name = key.partition(".")
            if node["class_type"] == class_type:
                node["inputs"][name] = value
    return prompt


def _nothing_ran(server) -> None:
    assert server.get("/history") == {}
    queue = server.get("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert not [path for path in server.output.rglob("*") if path.is_file()]


@pytest.mark.slow
def test_server_lists_only_what_is_inside_the_model_folders(server):
    info = server.get("/object_info")
    for loader in LOADER_INPUTS:
        spec = info[loader.node_id]["input"]["required"][loader.name]
        options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
        assert cf.TINY_OVERRIDES[loader.node_id].get(loader.name, "none") in options
        assert not [o for o in options if any(bad in o for bad in ("escape", "rootlink", "half_linked", "decoy"))], options


@pytest.mark.slow
def test_server_refuses_hostile_model_inputs_at_validation_without_running(server):
    outside = server.outside
    hostile = {
        "EmoCASTModelLoader.checkpoint": f"emocast/{outside / 'decoy.safetensors'}",  # emocast//<absolute path>
        "EmoCASTModelLoader.vae": "vae/..",
        "EmoCASTTextEncoderLoader.text_encoder": f"text_encoders/{_deep()}{str(outside / 'decoy.safetensors').lstrip('/')}",
        "EmoCASTTextEncoderLoader.tokenizer": "text_encoders/escape_link",  # a symlink to a folder outside
        "EmoCASTAudioEncoderLoader.wav2vec2": "audio_encoders/half_linked",
        "EmoCASTAudioEncoderLoader.vocal_separator": "emocast/audio_separator/escape_link.onnx",
        "EmoCASTFaceAnalyzerLoader.face_models": "insightface//etc/passwd",
    }
    prompt = _basic_prompt(**hostile)
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "emocast-paths"})
    assert status == 400, body
    loader_ids = {node_id for node_id, node in prompt.items() if node["class_type"] in {k.split(".")[0] for k in hostile}}
    assert set(body["node_errors"]) == loader_ids, body["node_errors"]
    for node_id in loader_ids:
        details = " ".join(error["details"] for error in body["node_errors"][node_id]["errors"])
        for key in hostile:
            class_type, _, name = key.partition(".")
            if prompt[node_id]["class_type"] == class_type:
                assert f"{name}: " in details and "is not one of the models listed" in details, details
    text = json.dumps(body)
    assert str(outside) not in text and outside.name not in text and "passwd" not in text and "SENTINEL" not in text
    _nothing_ran(server)


@pytest.mark.slow
def test_server_refuses_a_prefix_leaving_the_output_folder_before_sampling(server):
    prompt = _basic_prompt(**{"EmoCASTVideoCombine.filename_prefix": "../../escaped/emocast"})
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "emocast-paths"})
    assert status == 400, body
    video_ids = {node_id for node_id, node in prompt.items() if node["class_type"] == "EmoCASTVideoCombine"}
    assert set(body["node_errors"]) == video_ids, body["node_errors"]  # the tiny loaders' choices passed
    (error,) = body["node_errors"][video_ids.pop()]["errors"]
    assert error["details"].startswith("filename_prefix - filename_prefix: ")
    _nothing_ran(server)
    assert not list(server.root.parent.rglob("escaped"))
