"""Training configuration: a dataclass tree loaded from YAML, with dotted command-line overrides.

A run is fully described by one :class:`TrainConfig`. It is read from a YAML file (a preset name
from ``rainmamba_core/train/configs/`` or a path), then patched with ``section.key=value``
overrides (``train.lr=2e-4 data.crop=128``), validated, and written back as ``config.yaml`` into
the run folder, so the run folder alone is enough to reproduce or resume the run.

Unknown keys are refused (in the file and in overrides) with the valid keys listed: a typo must
never silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rainmamba_core.errors import RainMambaError

PRESET_DIR = Path(__file__).resolve().parent / 'configs'


class ConfigError(RainMambaError, ValueError):
    """A training configuration (file or override) is malformed or names an unknown key."""


@dataclass
class ModelConfig:
    """Which network is trained."""

    preset: str = 'tiny'            # 'tiny' or 'official' (RainMambaConfig presets)
    causal: bool = True             # causal-in-time blocks (streamable) vs the paper's offline mode
    overrides: dict[str, Any] = field(default_factory=dict)  # RainMambaConfig fields to replace
    init_from: str | None = None    # checkpoint whose weights start the run (fine-tuning); 'default': the bundled model


@dataclass
class DataConfig:
    """Training and validation clips.

    ``kind`` selects the dataset: ``paired`` reads the authors' layouts (``lq_root``/``gt_root``
    holding sequence folders of numbered frames); ``synthetic`` renders rain on the fly over the
    clean stills found under ``clean_roots``; ``video`` renders a random rain look per clip over
    clean videos (``clean_roots`` holds folders of consecutive frames; ``data.video_rain``).
    """

    kind: str = 'synthetic'                              # 'synthetic', 'video' or 'paired'
    lq_root: str | None = None                           # paired: rainy sequences
    gt_root: str | None = None                           # paired: clean sequences
    clean_roots: list[str] = field(default_factory=list)  # synthetic: folders of clean frames
    frames: int = 5                                      # T, frames per training clip
    crop: int = 256                                      # square crop side (pixels)
    batch: int = 2                                       # clips per step and per process
    workers: int = 2                                     # DataLoader worker processes per process
    options: dict[str, Any] = field(default_factory=dict)  # extra dataset keyword arguments
    # Validation: a held-out set scored by PSNR every `train.eval_interval` steps.
    val_kind: str | None = None                          # None: no validation; else like `kind`
    val_lq_root: str | None = None
    val_gt_root: str | None = None
    val_clean_roots: list[str] = field(default_factory=list)
    val_clips: int = 8                                   # synthetic: number of held-out clips
    val_crop: int | None = None                          # None: full frames (paired) / `crop`
    val_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Loss weights (0 disables a term) and the local VGG weight files the feature losses need."""

    charbonnier: float = 1.0
    perceptual: float = 0.0         # VGG16 to relu3_3, MSE (authors: 0.3)
    dcl: float = 0.0                # difference-guided dynamic contrastive locality (authors: 0.1)
    psnr: float = 0.0               # minus the per-frame PSNR in dB (the eval metric; not the authors')
    vgg16_path: str | None = None   # torchvision-layout VGG16 state_dict (perceptual)
    vgg19_path: str | None = None   # torchvision-layout VGG19 state_dict (DCL)
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the losses


@dataclass
class OptimConfig:
    """Optimiser, schedule, precision and bookkeeping of the training loop."""

    lr: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    iterations: int = 300_000
    warmup_iters: int = 2000        # linear warm-up length (steps)
    warmup_ratio: float = 1e-6      # lr multiplier at step 0 of the warm-up
    power: float = 1.0              # polynomial decay exponent (1.0: linear to min_lr)
    min_lr: float = 1e-9
    grad_clip: float | None = None  # max global grad norm; None: no clipping
    amp: str = 'auto'               # 'off', 'bf16', 'fp16', 'auto' (bf16 if supported) - CUDA only
    seed: int = 0
    device: str = 'auto'            # 'auto', 'cpu', 'cuda'
    threads: int | None = None      # torch intra-op threads per process (CPU); None: torch default
    log_interval: int = 100
    ckpt_interval: int = 5000
    eval_interval: int = 5000
    keep_last: int = 3              # training checkpoints kept in the run folder
    out_dir: str = 'runs'           # parent of run folders (`--out` names the run folder itself)
    run_name: str | None = None     # None: '<config name>_<date>-<time>'
    find_unused_parameters: bool = False  # DDP flag; needed if some parameters get no gradient
    trainable: list[str] = field(default_factory=list)  # parameter-name prefixes trained ([]: all); the rest frozen


@dataclass
class DistillConfig:
    """Distillation: loss = gt_weight * L(student, gt) + weight * L_pix(student, teacher(lq))."""

    teacher: str | None = None      # teacher checkpoint (RainMamba.from_checkpoint); None: off
    weight: float = 1.0             # weight of the teacher term
    gt_weight: float = 1.0          # weight of the ground-truth term (all enabled losses)


@dataclass
class TrainConfig:
    """Everything a run needs; sections map one-to-one onto the YAML file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    name: str = 'run'               # short label used in run folder names

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> None:
        """Check values that types alone cannot (raise ConfigError naming the key)."""
        checks = [
            (self.model.preset in ('tiny', 'official'), 'model.preset', "'tiny' or 'official'"),
            (self.data.kind in ('synthetic', 'video', 'paired'), 'data.kind',
             "'synthetic', 'video' or 'paired'"),
            (self.data.val_kind in (None, 'synthetic', 'video', 'paired'), 'data.val_kind',
             "null, 'synthetic', 'video' or 'paired'"),
            (self.data.frames >= 1, 'data.frames', 'an integer >= 1'),
            (self.data.crop >= 8, 'data.crop', 'an integer >= 8'),
            (self.data.batch >= 1, 'data.batch', 'an integer >= 1'),
            (self.data.workers >= 0, 'data.workers', 'an integer >= 0'),
            (self.train.lr > 0, 'train.lr', 'a positive float'),
            (len(self.train.betas) == 2, 'train.betas', 'two floats [beta1, beta2]'),
            (self.train.iterations >= 1, 'train.iterations', 'an integer >= 1'),
            (0 <= self.train.warmup_iters < self.train.iterations, 'train.warmup_iters',
             'an integer in [0, train.iterations)'),
            (0 < self.train.warmup_ratio <= 1, 'train.warmup_ratio', 'a float in (0, 1]'),
            (0 <= self.train.min_lr <= self.train.lr, 'train.min_lr', 'a float in [0, train.lr]'),
            (self.train.grad_clip is None or self.train.grad_clip > 0, 'train.grad_clip',
             'null or a positive float'),
            (self.train.amp in ('off', 'bf16', 'fp16', 'auto'), 'train.amp',
             "'off', 'bf16', 'fp16' or 'auto'"),
            (self.train.device in ('auto', 'cpu', 'cuda'), 'train.device', "'auto', 'cpu' or 'cuda'"),
            (self.train.keep_last >= 1, 'train.keep_last', 'an integer >= 1'),
            (all(isinstance(t, str) and t for t in self.train.trainable), 'train.trainable',
             "a list of parameter-name prefixes, e.g. ['detail.'] ([] trains every parameter)"),
            (min(self.train.log_interval, self.train.ckpt_interval, self.train.eval_interval) >= 1,
             'train.*_interval', 'intervals >= 1'),
            (self.distill.weight >= 0 and self.distill.gt_weight >= 0, 'distill.*weight',
             'non-negative weights'),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f'{key}: invalid value; expected {expected}')
        if self.data.kind == 'paired' and not (self.data.lq_root and self.data.gt_root):
            raise ConfigError('data.kind=paired needs data.lq_root and data.gt_root '
                              '(folders of sequence folders of numbered frames)')
        if self.data.kind in ('synthetic', 'video') and not self.data.clean_roots:
            raise ConfigError(f'data.kind={self.data.kind} needs data.clean_roots '
                              '(a list of folders with clean frames)')
        for weight, key in ((self.loss.charbonnier, 'loss.charbonnier'),
                            (self.loss.perceptual, 'loss.perceptual'), (self.loss.dcl, 'loss.dcl'),
                            (self.loss.psnr, 'loss.psnr')):
            if weight < 0 or not math.isfinite(weight):
                raise ConfigError(f'{key}={weight}: expected a finite weight >= 0')
        if self.loss.charbonnier + self.loss.perceptual + self.loss.dcl + self.loss.psnr <= 0:
            raise ConfigError('all loss weights are 0; set loss.charbonnier (or another) > 0')


# --------------------------------------------------------------------------------------------
# Building a config from plain data (YAML) with type checking and coercion.


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/override value to the annotated type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and type(None) in args and len(args) == 2):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ('null', 'none', '~')):
            return None
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f'{key}: expected a mapping (section), got {value!r}')
        return _build(tp, value, key)
    if tp is Any:
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f'{key}: expected a list, got {value!r}')
        return [_coerce(v, args[0], f'{key}[{i}]') for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f'{key}: expected a mapping, got {value!r}')
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('true', 'false', 'yes', 'no', '1', '0'):
            return value.lower() in ('true', 'yes', '1')
        raise ConfigError(f'{key}: expected true/false, got {value!r}')
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f'{key}: expected an integer, got {value!r}')
        if isinstance(value, int):
            return value
        try:
            number = float(value)  # accepts '3e5' and 300000.0
        except (TypeError, ValueError):
            raise ConfigError(f'{key}: expected an integer, got {value!r}') from None
        if not number.is_integer():
            raise ConfigError(f'{key}: expected an integer, got {value!r}')
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f'{key}: expected a number, got {value!r}')
        try:
            # PyYAML reads '2e-4' (no dot) as a string: accept it as the number it means.
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f'{key}: expected a number, got {value!r}') from None
    if tp is str:
        if isinstance(value, bool):
            # YAML 1.1 reads bare off/on/no/yes as booleans; `amp: off` means the word.
            return 'on' if value else 'off'
        if isinstance(value, (dict, list)):
            raise ConfigError(f'{key}: expected a string, got {value!r}')
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = '') -> Any:
    types = _field_types(cls)
    unknown = [k for k in data if k not in types]
    if unknown:
        where = f"'{prefix}'" if prefix else 'the top level'
        name = f'{prefix}.{unknown[0]}' if prefix else unknown[0]
        raise ConfigError(f'unknown config key {name!r}; valid keys in {where}: '
                          f'{", ".join(types)}')
    kwargs = {k: _coerce(v, types[k], f'{prefix}.{k}' if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c=value` in a nested dict, checking every part against the dataclass tree."""
    parts = key.split('.')
    cls: Any = TrainConfig
    node = tree
    for i, part in enumerate(parts):
        prefix = '.'.join(parts[:i])
        if dataclasses.is_dataclass(cls):
            types = _field_types(cls)
            if part not in types:
                where = f"'{prefix}'" if prefix else 'the top level'
                raise ConfigError(f'unknown config key {key!r}; valid keys in {where}: '
                                  f'{", ".join(types)}')
            tp = types[part]
        else:  # a free-form dict field (e.g. model.overrides.d_model=32)
            tp = Any
        last = i == len(parts) - 1
        if last:
            node[part] = value
            return
        if not (dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict or tp is Any):
            raise ConfigError(f'{key!r}: {".".join(parts[:i + 1])} is a value, not a section')
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
        cls = tp


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=2e-4'`` -> ``('train.lr', 2e-4)``; values are read as YAML scalars/lists."""
    if '=' not in text:
        raise ConfigError(f'override {text!r}: expected KEY=VALUE (for example train.lr=2e-4)')
    key, raw = text.split('=', 1)
    key = key.strip()
    if not key:
        raise ConfigError(f'override {text!r}: empty key')
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f'override {text!r}: value is not valid YAML ({exc})') from None
    return key, value


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (``vrds``, ``tiny_cpu``) or a path to a YAML file -> an existing path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESET_DIR / f'{name_or_path}.yaml'
    if preset.is_file():
        return preset
    presets = sorted(p.stem for p in PRESET_DIR.glob('*.yaml'))
    raise ConfigError(f'config {str(name_or_path)!r} is neither a file nor a preset; '
                      f'presets: {", ".join(presets)}')


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Build and validate a TrainConfig from nested plain data plus ``key=value`` overrides."""
    tree = dataclasses.asdict(_build(TrainConfig, dict(data or {})))
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    cfg = _build(TrainConfig, tree)
    cfg.validate()
    return cfg


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a preset or YAML file, apply overrides, validate.

    Args:
        name_or_path: preset name in ``rainmamba_core/train/configs`` or a YAML path.
        overrides: ``section.key=value`` strings applied in order.
    """
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f'{path}: not valid YAML ({exc})') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping of sections at the top level')
    data.setdefault('name', path.stem)
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f'{path}: {exc}') from None
