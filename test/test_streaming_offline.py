"""Authors-style offline inference: temporal windows and spatial tiles with overlap."""
from __future__ import annotations

import torch

from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
from rainmamba_core.streaming.offline import PRESETS, TilePreset, derain_clip_tiled, derain_video


def test_tiles_reassemble_a_pointwise_function():
    clip = torch.rand(1, 2, 3, 50, 70)
    out = derain_clip_tiled(lambda x: x * 2 + 1, clip, tile=24, overlap=8)
    # A pointwise function is unaffected by tiling: only float rounding of the averaging remains.
    assert torch.allclose(out, clip * 2 + 1, atol=1e-6)


def test_temporal_windows_average_each_frame():
    class Echo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, curves=None):  # output = the window's first frame index, everywhere
            return x[:, :1].expand_as(x).clone()

    video = torch.arange(7.0).view(1, 7, 1, 1, 1).expand(1, 7, 3, 8, 8).contiguous()
    out = derain_video(Echo(), video, TilePreset((5, 0, 0), (4, 0, 0)))
    # windows start at 0, 1, 2 (stride 1); frame t averages the starts of the windows covering it
    expected = torch.tensor([0, 0.5, 1, 1, 1, 1.5, 2])
    assert torch.allclose(out[0, :, 0, 0, 0], expected)


def test_single_full_window_equals_the_model():
    model = RainMamba(RainMambaConfig.tiny(causal=False)).eval()
    video = torch.rand(1, 5, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(derain_video(model, video, 'full'), model(video))


def test_presets_follow_the_authors():
    assert PRESETS['VRDS'] == TilePreset((5, 256, 256), (4, 32, 32))
    assert PRESETS['RainVIDSS'] == TilePreset((7, 128, 128), (6, 40, 40))
    assert PRESETS['RainSynAll100'] == TilePreset((5, 128, 128), (1, 4, 4))
