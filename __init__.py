"""EmoCAST for ComfyUI: emotional talking portraits (one portrait + speech + emotion text -> video).

ComfyUI loads this folder as a custom node pack and calls `comfy_entrypoint`. The nodes are registered
through the V3 extension API only (no NODE_CLASS_MAPPINGS, which would hide the entrypoint). ComfyUI is
imported only when the entrypoint runs, so `emocast_core` and this file import without ComfyUI.
"""


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    from .nodes import NODES

    class EmoCASTExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODES)

    return EmoCASTExtension()
