"""What a training run is built from its config: model, teacher, datasets, batches, loss."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ..paths import DEFAULT_MODEL
from .config import TrainConfig
from .errors import TrainError

log = logging.getLogger(__name__)


def expand_path(text: str) -> str:
    """Expand ``~``, ``$VAR`` and ``${VAR:-default}`` in a config path."""
    def repl(match: re.Match[str]) -> str:
        return os.environ.get(match.group(1)) or (match.group(2) or '')
    text = re.sub(r'\$\{(\w+):-([^}]*)\}', repl, text)
    return os.path.expanduser(os.path.expandvars(text))


# Inputs of the detail head a model started from keeps (model.init_from): dropping one would
# leave trained weights without their input.
TEMPORAL_INPUTS = ('detail_previous', 'detail_align')


def build_model(cfg: TrainConfig) -> nn.Module:
    """The student network from ``cfg.model`` (preset + overrides, optional initial weights)."""
    from rainmamba_core.models.rainmamba import RainMamba, RainMambaConfig
    overrides = dict(cfg.model.overrides)
    overrides['causal'] = cfg.model.causal
    source = None
    if cfg.model.init_from:
        # 'default': the bundled default model (fine-tune it on your own data)
        path = DEFAULT_MODEL if cfg.model.init_from == 'default' else expand_path(cfg.model.init_from)
        source = RainMamba.from_checkpoint(path)
        for key in TEMPORAL_INPUTS:  # what the head reads is kept unless the run says otherwise
            if not getattr(source.config, key):
                continue
            if key not in overrides:
                overrides[key] = True
                log.info('model.init_from %s has %s=True: kept (its head\'s trained weights read that input)',
                         cfg.model.init_from, key)
            elif not overrides[key]:
                raise TrainError(f'model.init_from {cfg.model.init_from} has {key}=True and '
                                 f'model.overrides.{key}=false asks to drop it: a trained head cannot lose '
                                 f'inputs; leave the key out to keep it')
        trained = source.config.detail_context
        if trained and overrides.setdefault('detail_context', trained) != trained:  # its trained block is kept
            # the same shapes at any dilation: another one would load silently and mean something else
            raise TrainError(f'model.init_from {cfg.model.init_from} has detail_context={trained} and '
                             f'model.overrides.detail_context={overrides["detail_context"]} asks for another: '
                             f'its trained block was trained at that dilation; leave the key out to keep it')
    preset = RainMambaConfig.tiny if cfg.model.preset == 'tiny' else RainMambaConfig.official
    try:
        model_cfg = preset(**overrides)
    except TypeError as exc:
        valid = ', '.join(f.name for f in dataclasses.fields(RainMambaConfig))
        raise TrainError(f'model.overrides {sorted(cfg.model.overrides)}: {exc}; valid keys: {valid}'
                         ) from None
    model = RainMamba(model_cfg)
    if source is not None:
        weights = source.state_dict()
        if model.detail is not None and source.detail is None:
            # Growing a trained model by the detail head: everything else must still match exactly.
            fresh = {k: v for k, v in model.state_dict().items() if k.startswith('detail.')}
            weights.update(fresh)
            log.info('model.init_from %s has no detail head: adding a fresh one (%d parameters, zero output '
                     'at the start)', cfg.model.init_from, sum(v.numel() for v in fresh.values()))
        if model.config.detail_previous and source.detail is not None and not source.config.detail_previous:
            weights = see_previous_frame(weights)
            log.info('model.init_from %s: its detail head now also reads the previous input frame (3 input '
                     'channels with zero weights: the output is unchanged at the start)', cfg.model.init_from)
        if model.detail is not None and source.detail is not None \
                and model.detail.out.in_channels > source.detail.out.in_channels:
            weights = widen_detail(weights, model.state_dict())
            log.info('model.init_from %s: widening its detail head from %d to %d channels (the new '
                     'channels start with zero output weights: the output is unchanged at the start)',
                     cfg.model.init_from, source.detail.out.in_channels, model.detail.out.in_channels)
        if model.config.detail_context and source.detail is not None and not source.config.detail_context:
            fresh = {k: v for k, v in model.state_dict().items() if k.startswith('detail.context.')}
            weights.update(fresh)
            log.info('model.init_from %s: adding a context block (dilation %d) to its detail head (%d parameters; '
                     'its last conv starts at zero: the output is unchanged at the start)', cfg.model.init_from,
                     model.config.detail_context, sum(v.numel() for v in fresh.values()))
        src_cfg, dst_cfg = source.config, model.config
        depths = ('blocks_high1', 'blocks_low', 'blocks_high2')
        if any(getattr(dst_cfg, d) > getattr(src_cfg, d) for d in depths):
            weights = deepen_stages(weights, src_cfg, model.state_dict(), dst_cfg)
            log.info('model.init_from %s: deepening its Mamba stages from %s to %s layer pairs (the new '
                     'pairs start as identities: the output is unchanged at the start)', cfg.model.init_from,
                     [getattr(src_cfg, d) for d in depths], [getattr(dst_cfg, d) for d in depths])
        model.load_state_dict_strict(weights, source=cfg.model.init_from)
    return model


def _pair_names(cfg: Any) -> list[list[str]]:
    """The global+local pair names of each Mamba stage (high1, low, high2), as RainMamba names them."""
    return [[f'MambaBlock{i + 1}' for i in range(cfg.blocks_high1)],
            [f'MambaBlockLowRes{i + 1}' for i in range(cfg.blocks_low)],
            [f'MambaBlock{cfg.blocks_high1 + i + 1}' for i in range(cfg.blocks_high2)]]


def deepen_stages(weights: dict[str, torch.Tensor], src_cfg: Any, fresh: dict[str, torch.Tensor],
                  dst_cfg: Any) -> dict[str, torch.Tensor]:
    """A trained model's Mamba stages grown to ``dst_cfg``'s depths, output unchanged (Net2DeeperNet-style).

    Each stage keeps its trained layer pairs first (renamed where the high-resolution pairs after
    the low-resolution stage are numbered on); the added pairs follow them with ``fresh``'s (random)
    weights, except the two residual branches' last projections (``mamba.out_proj`` and
    ``mlp.fc2``), which start at zero, so each added layer is the identity. Those projections get
    gradients at the first step, the rest of an added layer from the second. A source deeper than
    ``dst_cfg`` in any stage raises `TrainError`. (`build_model` calls this only when some stage
    grows; a source that is only deeper is refused by the strict load, which lists the keys.)
    """
    out = {k: v for k, v in weights.items() if 'MambaBlock' not in k}
    for old_stage, new_stage in zip(_pair_names(src_cfg), _pair_names(dst_cfg)):
        if len(old_stage) > len(new_stage):
            raise TrainError(f'cannot deepen {old_stage} into fewer layer pairs {new_stage}: '
                             'model.init_from is deeper than model.overrides')
        for i, new in enumerate(new_stage):
            for kind in ('Global', 'Local'):
                prefix = f'{kind}{new}.'
                if i < len(old_stage):
                    old = f'{kind}{old_stage[i]}.'
                    out.update({prefix + k[len(old):]: v for k, v in weights.items() if k.startswith(old)})
                    continue
                for k, v in fresh.items():
                    if k.startswith(prefix):
                        zero = k[len(prefix):] in ('mamba.out_proj.weight', 'mlp.fc2.weight', 'mlp.fc2.bias')
                        out[k] = torch.zeros_like(v) if zero else v.clone()
    return out


def see_previous_frame(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A trained detail head given three more inputs, the previous frame's RGB, output unchanged.

    The head's first conv reads [features, frame] and now [features, frame, previous frame]: the
    new input channels get zero weights, so the output is the same until training moves them
    (they get gradients at the first step). Every other key is returned as it was.
    """
    out = dict(weights)
    w = weights['detail.body.0.weight']
    out['detail.body.0.weight'] = torch.cat([w, w.new_zeros(w.shape[0], 3, *w.shape[2:])], dim=1)
    return out


def widen_detail(weights: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A trained detail head (conv, GELU, conv, GELU, out) grown to the width of ``fresh``'s, output unchanged.

    The old channels keep their weights; the new channels of both body convs take ``fresh``'s
    (random) weights, the old channels of the second conv ignore the new ones (zero weights), and
    the last conv reads the new channels with zero weights (Net2Net-style growth). The last conv's
    new weights get gradients at the first step; once they are nonzero, the new body channels get
    gradients too (from the second step). Every other key is returned as it was.
    """
    out = dict(weights)
    old = weights['detail.out.weight'].shape[1]
    for key in ('detail.body.0.weight', 'detail.body.0.bias', 'detail.body.2.bias'):
        out[key] = torch.cat([weights[key], fresh[key][old:]])
    second = fresh['detail.body.2.weight'].clone()
    second[:old] = 0                                  # the old outputs ignore the new inputs...
    second[:old, :old] = weights['detail.body.2.weight']  # ...and read the old ones as before
    out['detail.body.2.weight'] = second
    last = torch.zeros_like(fresh['detail.out.weight'])
    last[:, :old] = weights['detail.out.weight']
    out['detail.out.weight'] = last
    return out


def freeze_except(model: nn.Module, prefixes: list[str]) -> None:
    """Train only the parameters whose names start with one of ``prefixes`` (all when empty).

    The rest get ``requires_grad=False`` (their weights stay those the run started from). A prefix
    that names no parameter is refused, listing the model's top-level modules: a typo must not
    silently freeze the whole network."""
    if not prefixes:
        return
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split('.')[0] + '.' for n in names})
            raise TrainError(f'train.trainable: {prefix!r} matches no parameter of the model; expected '
                             f'prefixes of parameter names such as {", ".join(tops)}')
    count = 0
    for name, param in model.named_parameters():
        keep = name.startswith(tuple(prefixes))
        param.requires_grad_(keep)
        count += param.numel() if keep else 0
    log.info('train.trainable %s: %d of %d parameters trained, the rest frozen', prefixes, count,
             sum(p.numel() for p in model.parameters()))


def build_teacher(cfg: TrainConfig, device: torch.device) -> nn.Module | None:
    """The frozen distillation teacher (eval mode, no gradients), or None."""
    if not cfg.distill.teacher:
        return None
    from rainmamba_core.models.rainmamba import RainMamba
    path = expand_path(cfg.distill.teacher)
    if not Path(path).is_file():
        raise TrainError(f'distill.teacher={path}: no such checkpoint; give a RainMamba checkpoint '
                         '(ours or the authors\') or set distill.teacher=null')
    teacher = RainMamba.from_checkpoint(path).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """(train, validation or None) datasets from ``cfg.data`` via ``rainmamba_core.data``."""
    from rainmamba_core.data import datasets as D
    d = cfg.data

    def make(kind: str, lq: str | None, gt: str | None, clean: list[str], crop: int | None,
             options: dict[str, Any], train: bool) -> Dataset:
        if kind == 'paired':
            if not (lq and gt):
                raise TrainError('a paired dataset needs lq and gt roots (data.lq_root/gt_root or '
                                 'data.val_lq_root/val_gt_root)')
            return D.build_paired_dataset(expand_path(lq), expand_path(gt), frames=d.frames,
                                          crop=crop, train=train, **options)
        if not clean:
            raise TrainError(f'a {kind} dataset needs clean frame folders (data.clean_roots or '
                             'data.val_clean_roots)')
        if kind == 'video':
            from rainmamba_core.data.video_rain import build_video_dataset
            if 'still_roots' in options:
                options = {**options, 'still_roots': [expand_path(p) for p in options['still_roots']]}
            return build_video_dataset([expand_path(p) for p in clean], frames=d.frames, crop=crop,
                                       train=train, **options)
        return D.build_synthetic_dataset([expand_path(p) for p in clean], frames=d.frames,
                                         crop=crop, train=train, **options)

    train_set = make(d.kind, d.lq_root, d.gt_root, d.clean_roots, d.crop, d.options, True)
    val_set = None
    if d.val_kind:
        crop = d.val_crop if d.val_crop is not None else (d.crop if d.val_kind in ('synthetic', 'video') else None)
        val_set = make(d.val_kind, d.val_lq_root, d.val_gt_root, d.val_clean_roots, crop,
                       d.val_options, False)
    return train_set, val_set


def collate_clips(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack the tensor entries of dataset items (lq, gt, masks ...); drop metadata."""
    keys = [k for k, v in items[0].items() if isinstance(v, torch.Tensor)]
    return {k: torch.stack([item[k] for item in items]) for k in keys}


class Criterion:
    """The ground-truth loss: weighted sum of Charbonnier, PSNR, perceptual and DCL terms.

    Call: ``criterion(out, gt, lq, step) -> (total, {name: value})``, all ``(B, T, 3, H, W)``.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        from rainmamba_core.train import losses as L
        self.losses = L
        self.cfg = cfg.loss
        self.total_iters = cfg.train.iterations
        self.terms: list[tuple[str, float, Callable[..., torch.Tensor]]] = []
        if cfg.loss.charbonnier > 0:
            self.terms.append(('charbonnier', cfg.loss.charbonnier,
                               lambda out, gt, lq, step: L.charbonnier_loss(out, gt)))
        if cfg.loss.psnr > 0:
            psnr_kw = dict(cfg.loss.options.get('psnr', {}))  # e.g. {'eps': 1e-6}: a 60 dB ceiling
            self.terms.append(('psnr', cfg.loss.psnr,
                               lambda out, gt, lq, step, kw=psnr_kw: L.psnr_loss(out, gt, **kw)))
        if cfg.loss.perceptual > 0:
            module = L.build_perceptual_loss(
                expand_path(cfg.loss.vgg16_path) if cfg.loss.vgg16_path else None,
                **cfg.loss.options.get('perceptual', {})).to(device)
            self.terms.append(('perceptual', cfg.loss.perceptual,
                               lambda out, gt, lq, step, m=module: m(out, gt)))
        if cfg.loss.dcl > 0:
            module = L.build_dcl_loss(
                expand_path(cfg.loss.vgg19_path) if cfg.loss.vgg19_path else None,
                total_iters=self.total_iters, **cfg.loss.options.get('dcl', {})).to(device)
            self.terms.append(('dcl', cfg.loss.dcl,
                               lambda out, gt, lq, step, m=module: m(out, gt, lq, step=step)))

    def __call__(self, out: torch.Tensor, gt: torch.Tensor, lq: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(out, gt, lq, step) for name, _, fn in self.terms}
        total = sum(weight * parts[name] for name, weight, _ in self.terms)
        return total, parts  # type: ignore[return-value]
