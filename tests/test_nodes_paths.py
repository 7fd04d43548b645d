"""The loader nodes read only models listed in ComfyUI's model folders, and the video node writes only
inside ComfyUI's output folder, whatever string a workflow carries: in process, against ComfyUI's real
`folder_paths`.

Every hostile string of `hostile_paths.HOSTILE` x every model input of every loader is refused by
``validate_inputs`` (a loader's main model input; see `_validated_by_the_node`) and by ``execute`` with one line that names the input and says nothing about
the target, while an audit hook checks that nothing outside the model folders was opened or listed and
the model-loading code is never reached. Needs ComfyUI importable (conftest collects this file only
then; `test_comfyui_in_process.py` runs it with ComfyUI's Python), e.g.
``COMFYUI_DIR=/path/to/comfy /path/to/comfy/venv/bin/python -m pytest tests/test_nodes_paths.py``.
The same cases through a real server's ``POST /prompt`` are in `test_comfyui_paths.py`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from comfy_in_process import import_comfyui, load_pack, node_classes
from hostile_paths import (
    DEMO,
    HOSTILE,
    KEYS,
    LOADER_INPUTS,
    LoaderInput,
    write_escapes,
    write_fake_models,
    write_outside,
)

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.comfyui]


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
    return import_comfyui()


@pytest.fixture(scope="module")
def nodes(comfy_folders):
    return node_classes(load_pack())


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


def _validated_by_the_node(nodes, loader: LoaderInput) -> bool:
    """A loader's validate_inputs takes only its main model input: ComfyUI files the line under every input
    it takes. The others are refused when the node runs, before anything is read (ComfyUI 0.3.64 does not
    check a V3 combo's value against its options when queueing; later versions do)."""
    import inspect

    return loader.name in inspect.signature(nodes[loader.node_id].validate_inputs).parameters


def _queue_time_refusal(nodes, loader: LoaderInput, value) -> str:
    """The line that refuses ``value``: the node's validate_inputs for its main model input, else the line
    execute() gives (``value`` is not among the listed choices either)."""
    from comfy_api.latest import io

    if _validated_by_the_node(nodes, loader):
        return nodes[loader.node_id].validate_inputs(**{loader.name: value})
    assert value not in _choices(nodes, loader)
    with pytest.raises(ValueError) as refused:
        nodes[loader.node_id].PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(
            **{loader.name: value}, **loader.other_inputs)
    return str(refused.value)


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
            if _validated_by_the_node(nodes, loader):
                assert nodes[loader.node_id].validate_inputs(**{loader.name: choice}) is True, (loader.name, choice)
    inputs = {loader.name: loader for loader in LOADER_INPUTS}
    by_name = {"checkpoint": paths_module.CHECKPOINT, "vae": paths_module.VAE, "text_encoder": paths_module.TEXT_ENCODER,
               "tokenizer": paths_module.TOKENIZER, "wav2vec2": paths_module.AUDIO_ENCODER,
               "vocal_separator": paths_module.VOCAL_SEPARATOR, "face_models": paths_module.FACE_MODELS}
    for name, model_input in by_name.items():
        assert model_input.resolve(inputs[name].legit) == legit[inputs[name].legit]
    assert paths_module.VAE.resolve("vae/shared-vae") == legit["vae/shared-vae"]
    assert nodes["EmoCASTModelLoader"].validate_inputs(checkpoint=DEMO) is True
    assert nodes["EmoCASTTextEncoderLoader"].validate_inputs(text_encoder=DEMO) is True
    assert nodes["EmoCASTAudioEncoderLoader"].validate_inputs(wav2vec2=DEMO) is True
    assert nodes["EmoCASTFaceAnalyzerLoader"].validate_inputs(face_models=DEMO) is True


def test_auto_tokenizer_beside_the_encoder_stays_inside(nodes, tree):
    loaders, text_encoders = sys.modules["emocast_pack.nodes.loaders"], tree["models"] / "text_encoders"
    assert loaders._tokenizer_beside(text_encoders / "clip_l.safetensors") == text_encoders / "clip_l_tokenizer"
    # lonely_tokenizer/ leads out: skipped for the next candidate, the shared clip_l_tokenizer/.
    assert loaders._tokenizer_beside(text_encoders / "lonely.safetensors") == text_encoders / "clip_l_tokenizer"


def test_a_missing_model_is_named_with_where_to_put_it(nodes, tree):
    message = nodes["EmoCASTModelLoader"].validate_inputs(checkpoint="emocast/net_v2.safetensors")
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
    baseline = _queue_time_refusal(nodes, loader, "\x00")

    from comfy_api.latest import io

    access_log.start()
    try:
        message = _queue_time_refusal(nodes, loader, value)
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
