"""The bi-directional mixer (BiMamba) against an independent reference, in both time semantics.

The causal tests elsewhere compare stepping with the whole-clip forward: both run this mixer, so
they prove equivalence, not correctness. Here the mixer is pinned to mambapy's MambaBlock (another
author's plain-PyTorch Mamba, sequential scan), one block per direction with the mixer's weights:

    official: out = fwd(x) + flip(bwd(flip(x)))                  over the whole sequence
    causal:   out = fwd(x) + per frame: flip(bwd(flip(frame)))   backward inside each frame

(fwd and bwd share in_proj and out_proj; out_proj is linear, so summing the two blocks' outputs
equals out_proj of the summed directions, as the mixer computes it.)
"""
from __future__ import annotations

import pytest
import torch

from rainmamba_core.modules.bimamba import BiMamba

mamba = pytest.importorskip('mambapy.mamba', reason='mambapy is not installed (pip install mambapy)')

B, C, N, K = 2, 8, 4, 4      # batch, d_model, d_state, d_conv (small: the reference loops over L)
F_LEN = 12                   # tokens per frame (not a power of two)
# fp32: the mixer's scan backend and mambapy's sequential loop sum in different orders; measured
# rel. ~1e-7. A mixer with its backward output not flipped back, or dropped, is ~0.2-1 off.
REL = 1e-5


def _mixer(seed: int = 0) -> BiMamba:
    torch.manual_seed(seed)
    mixer = BiMamba(C, d_state=N, d_conv=K).eval()
    with torch.no_grad():  # move A, D and the biases off their initial values: nothing symmetric
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer


def _reference_blocks(mixer: BiMamba) -> tuple[torch.nn.Module, torch.nn.Module]:
    """mambapy blocks for the forward and the backward direction, with the mixer's weights."""
    cfg = mamba.MambaConfig(d_model=C, n_layers=1, d_state=N, expand_factor=2, d_conv=K,
                            pscan=False)  # sequential scan: the plainest reference
    sd = mixer.state_dict()
    shared = {k: sd[k] for k in ('in_proj.weight', 'out_proj.weight')}
    fwd, bwd = mamba.MambaBlock(cfg), mamba.MambaBlock(cfg)
    own = ('conv1d.weight', 'conv1d.bias', 'x_proj.weight', 'dt_proj.weight', 'dt_proj.bias',
           'A_log', 'D')
    fwd.load_state_dict({**shared, **{k: sd[k] for k in own}})
    backward_names = {'conv1d.weight': 'conv1d_b.weight', 'conv1d.bias': 'conv1d_b.bias',
                      'x_proj.weight': 'x_proj_b.weight', 'dt_proj.weight': 'dt_proj_b.weight',
                      'dt_proj.bias': 'dt_proj_b.bias', 'A_log': 'A_b_log', 'D': 'D_b'}
    bwd.load_state_dict({**shared, **{k: sd[v] for k, v in backward_names.items()}})
    return fwd.eval(), bwd.eval()


def reference(mixer: BiMamba, x: torch.Tensor, frame_len: int) -> torch.Tensor:
    """x: (B, L, C) of L // frame_len frames -> (B, L, C); frame_len = L is the official mode."""
    fwd, bwd = _reference_blocks(mixer)
    batch, length, ch = x.shape
    frames = x.reshape(batch * (length // frame_len), frame_len, ch)      # (B*T, F, C)
    back = bwd(frames.flip(1)).flip(1).reshape(batch, length, ch)
    return fwd(x) + back


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_causal_on_one_frame_equals_official() -> None:
    # One frame spanning the whole sequence: the backward direction covers the same tokens in
    # both modes, so the two code paths must agree exactly (same ops in the same order).
    mixer = _mixer()
    x = torch.randn(B, F_LEN, C)
    with torch.no_grad():
        official = mixer(x)
        causal = mixer(x, frame_len=F_LEN)
    assert torch.equal(causal, official), f'max diff {(causal - official).abs().max():.3g}'


@pytest.mark.parametrize('frames', [1, 3])
def test_official_mode_equals_reference(frames: int) -> None:
    mixer = _mixer(1)
    x = torch.randn(B, frames * F_LEN, C)
    with torch.no_grad():
        got, want = mixer(x), reference(mixer, x, frame_len=frames * F_LEN)
    print(f'official, {frames} frame(s): rel {_rel(got, want):.2e}')
    assert _rel(got, want) <= REL


@pytest.mark.parametrize('frames', [2, 4])
def test_causal_mode_equals_reference_on_several_frames(frames: int) -> None:
    mixer = _mixer(2)
    x = torch.randn(B, frames * F_LEN, C)
    with torch.no_grad():
        got, want = mixer(x, frame_len=F_LEN), reference(mixer, x, frame_len=F_LEN)
        # The same clip one frame at a time with the carried state: pinned to the reference too.
        state, stepped = None, []
        for t in range(frames):
            out, state = mixer(x[:, t * F_LEN:(t + 1) * F_LEN], frame_len=F_LEN, state=state,
                               return_state=True)
            stepped.append(out)
        stepped_out = torch.cat(stepped, dim=1)
    print(f'causal, {frames} frames: rel {_rel(got, want):.2e}, stepped {_rel(stepped_out, want):.2e}')
    assert _rel(got, want) <= REL
    assert _rel(stepped_out, want) <= REL
    # Causal in time: frame 0's output does not depend on later frames (the official mode's does).
    x2 = x.clone()
    x2[:, F_LEN:] += 1.0
    with torch.no_grad():
        assert torch.equal(mixer(x2, frame_len=F_LEN)[:, :F_LEN], got[:, :F_LEN])
        assert not torch.allclose(mixer(x2)[:, :F_LEN], mixer(x)[:, :F_LEN])


def test_reference_is_sensitive_to_the_backward_direction() -> None:
    # Guards the reference itself: dropping the backward block or leaving it unflipped must
    # change the output by far more than REL, or the tests above could not catch those bugs.
    mixer = _mixer(3)
    x = torch.randn(B, 3 * F_LEN, C)
    fwd, bwd = _reference_blocks(mixer)
    with torch.no_grad():
        want = reference(mixer, x, F_LEN)
        frames = x.reshape(-1, F_LEN, C)
        unflipped = fwd(x) + bwd(frames.flip(1)).reshape(x.shape)
        assert _rel(fwd(x), want) > 100 * REL
        assert _rel(unflipped, want) > 100 * REL
