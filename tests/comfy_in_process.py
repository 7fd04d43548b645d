"""What the in-process node tests (``tests/test_nodes*.py``) share: ComfyUI imported from ``COMFYUI_DIR``
and the pack loaded as ComfyUI loads it from ``custom_nodes`` (a package named after its folder).

They run with ComfyUI's own Python (conftest collects them only there; `test_comfyui_in_process.py`
runs them from the project's Python).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_MODULE = "emocast_pack"


def import_comfyui():
    """Import ComfyUI on the CPU and return its ``folder_paths``; skip the module when it is not importable."""
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
                    "pytest with ComfyUI's Python", allow_module_level=True)
    return folder_paths


def load_pack():
    """The pack's ``__init__`` as a package, once per interpreter."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def node_classes(pack) -> dict:
    """``node_id -> node class`` from the pack's ``comfy_entrypoint``."""
    extension = asyncio.run(pack.comfy_entrypoint())
    return {node.GET_SCHEMA().node_id: node for node in asyncio.run(extension.get_node_list())}
