"""RainMamba configuration: one dataclass, one comment per field, presets as classmethods."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rainmamba_core.errors import RainMambaError


class ConfigError(RainMambaError, ValueError):
    """A configuration value or key is invalid."""


# Config keys added after the first release, with the default that leaves the network as it was.
LATE_KEYS: dict[str, Any] = {'detail_previous': False, 'detail_align': False, 'detail_context': 0,
                             'detail_align_frames': 1, 'detail_align_thin': 0, 'detail_align_tiles': 0,
                             'novelty_clamp': 0.0, 'novelty_clamp_fade': 0.6, 'novelty_clamp_frames': 2}


@dataclass
class RainMambaConfig:
    num_features: int = 128            # channels of the Mamba stages at 1/4 resolution (x2 at 1/8)
    encoder_depths: tuple[int, ...] = (3, 3, 9, 3)         # ConvNeXt blocks per stage
    encoder_channels: tuple[int, ...] = (96, 192, 384, 768)  # ConvNeXt channels per stage
    blocks_high1: int = 2              # global+local layer pairs at 1/4 resolution, before downsampling
    blocks_low: int = 3                # pairs at 1/8 resolution
    blocks_high2: int = 2              # pairs at 1/4 resolution, after upsampling
    d_state: int = 16                  # SSM state size N
    d_conv: int = 4                    # width of the mixer's depthwise causal conv1d
    expand: int = 2                    # d_inner = expand * channels
    mlp_ratio: float = 4.0             # MLP hidden = mlp_ratio * channels
    decoder_channels: int = 128        # channels before the first PixelShuffle (official: 128)
    causal: bool = False               # causal in time: frame-by-frame streaming with carried state
    residual_output: bool = False      # add the input frame to the output (official: False)
    detail_channels: int = 0           # full-resolution detail head that sees the input frame (0: none, official)
    detail_previous: bool = False      # the detail head also sees the previous input frame (carried when streaming)
    detail_align: bool = False         # ... moved onto the current frame (phase correlation), as its difference to it
    detail_align_frames: int = 1       # ... from this many earlier frames (1-3, all carried), kept where they agree
    detail_align_thin: int = 0         # ... keeping only thin bright parts: a top-hat this wide across rows (0: all)
    detail_align_tiles: int = 0        # ... moved by a shift per tile of this many x this many (0: one for the frame)
    detail_context: int = 0            # dilation of a residual block in the detail head that widens its view (0: none)
    novelty_clamp: float = 0.0         # at inference, on frames whose mean change is at most this (grey levels),
    #                                    limit the change to what is new against aligned earlier frames (0: off)
    novelty_clamp_fade: float = 0.6    # ... fading out over this many more grey levels of mean change
    novelty_clamp_frames: int = 2      # ... against this many earlier frames (1-3, carried when streaming)
    pad_multiple: int = 8              # H and W are padded (mirror) up to a multiple of this
    window: int = 5                    # frames per clip the model was trained on (windowed mode)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (not used by the network)

    def __post_init__(self) -> None:
        self.encoder_depths = tuple(int(v) for v in self.encoder_depths)
        self.encoder_channels = tuple(int(v) for v in self.encoder_channels)
        if len(self.encoder_depths) != 4 or len(self.encoder_channels) != 4:
            raise ConfigError('encoder_depths and encoder_channels need 4 stages each, got '
                              f'{self.encoder_depths} and {self.encoder_channels}')
        if self.decoder_channels % 8:
            raise ConfigError(f'decoder_channels must be a multiple of 8 (two PixelShuffle(2)), got '
                              f'{self.decoder_channels}')
        if self.pad_multiple % 8:
            raise ConfigError(f'pad_multiple must be a multiple of 8 (stride 4 encoder + stride 2 '
                              f'down/up path), got {self.pad_multiple}')
        if self.detail_channels < 0:
            raise ConfigError(f'detail_channels must be >= 0 (0: no detail head), got {self.detail_channels}')
        if self.detail_previous and not self.detail_channels:
            raise ConfigError('detail_previous needs a detail head (detail_channels > 0)')
        if self.detail_align and not self.detail_previous:
            raise ConfigError('detail_align aligns the previous frame the detail head sees: it needs '
                              'detail_previous=True')
        if not 1 <= self.detail_align_frames <= 3:
            raise ConfigError(f'detail_align_frames must be 1, 2 or 3 (previous frames aligned onto each frame), '
                              f'got {self.detail_align_frames}')
        if self.detail_align_frames > 1 and not self.detail_align:
            raise ConfigError('detail_align_frames > 1 combines aligned differences: it needs detail_align=True')
        if self.detail_align_thin and (self.detail_align_thin < 3 or self.detail_align_thin % 2 == 0):
            raise ConfigError(f'detail_align_thin must be 0 (the whole aligned difference) or an odd width >= 3 '
                              '(the top-hat across rows that keeps the thin bright parts), '
                              f'got {self.detail_align_thin}')
        if self.detail_align_tiles and not (self.detail_align and 2 <= self.detail_align_tiles <= 4):
            raise ConfigError('detail_align_tiles moves the earlier frames the aligned head sees by one shift per '
                              'tile: 0 (one shift) or 2-4 tiles a side, with detail_align=True; '
                              f'got {self.detail_align_tiles}')
        if self.detail_align_thin and not self.detail_align:
            raise ConfigError('detail_align_thin filters the aligned difference: it needs detail_align=True')
        if self.detail_context < 0:
            raise ConfigError(f'detail_context must be >= 0 (0: no context block), got {self.detail_context}')
        if self.detail_context and not self.detail_channels:
            raise ConfigError('detail_context widens the detail head: it needs detail_channels > 0')
        if self.novelty_clamp < 0 or self.novelty_clamp_fade < 0:
            raise ConfigError('novelty_clamp and novelty_clamp_fade are grey levels of mean change, >= 0 '
                              f'(novelty_clamp 0: off), got {self.novelty_clamp} and {self.novelty_clamp_fade}')
        if not 1 <= self.novelty_clamp_frames <= 3:
            raise ConfigError(f'novelty_clamp_frames must be 1, 2 or 3 (earlier frames aligned onto each frame), '
                              f'got {self.novelty_clamp_frames}')
        if self.novelty_clamp and not self.detail_align:
            raise ConfigError('novelty_clamp compares each frame with earlier frames the detail head carries and '
                              'aligns: it needs detail_previous=True and detail_align=True')
        for name in ('num_features', 'd_state', 'd_conv', 'expand', 'window'):
            if getattr(self, name) < 1:
                raise ConfigError(f'{name} must be >= 1, got {getattr(self, name)}')

    @classmethod
    def official(cls, **overrides: Any) -> 'RainMambaConfig':
        """The published architecture (state_dict-compatible with the authors' checkpoints)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> 'RainMambaConfig':
        """A small causal model for CPU streaming, tests and the bundled default."""
        base = dict(num_features=32, encoder_depths=(1, 1, 1, 1), encoder_channels=(24, 48, 96, 192),
                    blocks_high1=1, blocks_low=1, blocks_high2=1, d_state=8, mlp_ratio=2.0,
                    decoder_channels=32, causal=True, residual_output=True)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints. Keys added after the first release (:data:`LATE_KEYS`) are
        left out while they hold their default, so the file still loads in earlier versions of the
        package, whose :meth:`from_dict` refuses keys it does not know."""
        d = dataclasses.asdict(self)
        d['encoder_depths'] = list(self.encoder_depths)
        d['encoder_channels'] = list(self.encoder_channels)
        for key, default in LATE_KEYS.items():
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'RainMambaConfig':
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f'unknown RainMambaConfig keys {unknown}; valid keys: {sorted(known)}')
        return cls(**data)


# Inference settings a front end may replace in a model file's config at load time (no weights, no
# training): the Derainer's options of the same names, the node's [reload] parameters.
RUN_TIME_KEYS: tuple[str, ...] = ('novelty_clamp', 'detail_align_tiles')  # each of its LATE_KEYS default's type


def with_run_time(config: RainMambaConfig, settings: dict[str, Any]) -> RainMambaConfig:
    """`config` with the run-time settings (:data:`RUN_TIME_KEYS`) in `settings` replaced, checked
    like any config.

    - ``novelty_clamp``: grey levels of mean change (0: off; model card (49)), an inference guard;
    - ``detail_align_tiles``: how the aligned detail head moves earlier frames onto a frame, one
      shift for the frame (0) or one per tile of N x N (2-4; model card (50)).

    Both change what the aligned detail head carries or computes when streaming: set them before
    the first step.

    Raises:
        ConfigError: a key that is not a run-time setting, a value out of range, or a model that
            cannot take it (no aligned detail head).
    """
    unknown = sorted(set(settings) - set(RUN_TIME_KEYS))
    if unknown:
        raise ConfigError(f'{unknown} are not run-time settings; the run-time settings are {sorted(RUN_TIME_KEYS)}')
    said = ', '.join(f'{key}={value}' for key, value in settings.items())
    try:
        return dataclasses.replace(config, **{key: type(LATE_KEYS[key])(value) for key, value in settings.items()})
    except ConfigError as exc:
        raise ConfigError(f'{said} cannot be set on this model: {exc}') from None
