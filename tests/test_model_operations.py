"""The network is built from the `operations` namespace it is given (see `emocast_core/models/layers.py`):
a host such as ComfyUI can only load a model partially when every layer that holds weights is one of
its own cast-on-the-fly layers, so a single layer built from `torch.nn` behind its back would break it."""
from __future__ import annotations

import types

import torch
from torch import nn

from emocast_core.checkpoint import load_emocast_net
from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.net import EmoCASTNet


class _Marked:
    """Mixed into the recording namespace's layers."""


def _recording_operations() -> types.SimpleNamespace:
    return types.SimpleNamespace(**{
        name: type(name, (getattr(nn, name), _Marked), {}) for name in ("Linear", "Conv2d", "GroupNorm", "LayerNorm")
    })


def _layers_with_weights(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def test_every_layer_with_weights_comes_from_the_namespace(oracle_dir):
    config = EmoCASTConfig.from_upstream_file(oracle_dir / "tiny_config.json")
    net = EmoCASTNet.build(config, device="meta", operations=_recording_operations())
    layers = _layers_with_weights(net)
    assert len(layers) > 100  # the whole tiny network, not an empty shell
    foreign = [name for name, layer in layers if not isinstance(layer, _Marked)]
    assert not foreign, f"layers built outside the operations namespace: {foreign[:5]}"
    # The default stays plain torch.
    plain = EmoCASTNet.build(config, device="meta")
    assert not any(isinstance(layer, _Marked) for _, layer in _layers_with_weights(plain))


def test_the_released_weights_load_into_either_build_and_compute_the_same(oracle_dir):
    config = EmoCASTConfig.from_upstream_file(oracle_dir / "tiny_config.json")
    checkpoint = oracle_dir / "tiny_net.safetensors"
    plain = load_emocast_net(checkpoint, config)
    recorded = load_emocast_net(checkpoint, config, operations=_recording_operations())
    assert plain.state_dict().keys() == recorded.state_dict().keys()
    # Same layer maths (the namespace's layers are torch's own): equal up to float32 rounding noise.
    latents = torch.randn(1, config.unet.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    tokens = torch.randn(1, 81, config.unet.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain.reference_unet(latents, tokens)
        got = recorded.reference_unet(latents, tokens)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
