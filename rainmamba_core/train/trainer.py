"""The training loop: iteration-based, resumable exactly, single process or torchrun/DDP.

Glossary: B clips per step and process, T frames, H x W crop, W_s world size (processes).

One step: a batch ``lq, gt: (B, T, 3, H, W)`` -> ``out = model(lq)`` -> loss (Charbonnier,
optionally perceptual and DCL against ``gt``; optionally Charbonnier against a frozen teacher's
``teacher(lq)``) -> backward (AMP + GradScaler on CUDA) -> optional grad-norm clipping -> Adam ->
poly/warm-up lr. Under DDP every process sees different clips (see ``sampling.py``) and the
gradients are averaged, so all ranks hold the same weights after every step.

The run folder holds ``config.yaml`` (the final config), ``ckpt_XXXXXXXX.pt`` (the last
``keep_last`` training checkpoints), ``model_final.pt`` (weights only, for shipping),
``train_log.csv`` / ``val_log.csv`` and, when tensorboard is installed, ``tb/``.

What a run is built from (model, data, loss) is in ``build.py``; what it reports (validation,
logs) in ``monitor.py``.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from . import checkpoint as ckpt
from .build import Criterion, build_datasets, build_model, build_teacher, collate_clips, expand_path, freeze_except
from .config import TrainConfig, config_from_dict
from .distributed import DistInfo, all_reduce_mean, barrier, broadcast_object, gather_objects, init_distributed
from .errors import TrainError
from .monitor import CsvLog, PSNRValidation, open_tensorboard, state_hash
from .sampling import ResumableSampler, SeededDataset, get_rng_state, seed_everything, set_rng_state
from .schedule import build_scheduler

log = logging.getLogger(__name__)

# Validation hook: (trainer, step) -> metrics to log (or None).
Hook = Callable[['Trainer', int], 'dict[str, float] | None']


class _StopFlag:
    """Ctrl-C in a single process: finish the current step, checkpoint, then stop.

    Interrupting inside the optimiser update would leave weights and step counter out of step, so
    the first SIGINT only sets a flag; a second one interrupts at once. Under torchrun the ranks
    would see the signal at different steps and deadlock in the checkpoint's collectives, so there
    the default behaviour is kept.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    @classmethod
    def install(cls, enabled: bool) -> '_StopFlag':
        flag = cls()
        if enabled and threading.current_thread() is threading.main_thread():
            flag._previous = signal.signal(signal.SIGINT, flag._handle)
        return flag

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning('Ctrl-C: stopping after this step (press again to abort without a checkpoint)')

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class Trainer:
    """Owns model, optimiser, schedule, data stream, logs and checkpoints of one run.

    Args:
        cfg: the run's configuration.
        run_dir: the run folder; None: ``cfg.train.out_dir/<run name>``.
        resume: a training checkpoint to continue from (None: fresh start).
        model, train_set, val_set: injected instead of being built from ``cfg`` (tests, notebooks).
        hooks: extra callables run every ``eval_interval`` steps (after the PSNR validation).
        progress: show a tqdm bar on rank 0.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path | None = None,
                 resume: str | Path | None = None, model: nn.Module | None = None,
                 train_set: Dataset | None = None, val_set: Dataset | None = None,
                 hooks: list[Hook] | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.dist: DistInfo = init_distributed(cfg.train.device)
        self.device = self.dist.device
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.progress = progress and self.dist.is_main
        self.amp_dtype = self._resolve_amp()

        # Same seed on every rank for the weights (DDP also broadcasts rank 0's at wrap time);
        # per-rank seeds afterwards so any randomness inside the step differs across ranks.
        seed_everything(cfg.train.seed)
        self.raw_model = (model if model is not None else build_model(cfg)).to(self.device)
        freeze_except(self.raw_model, list(cfg.train.trainable))
        seed_everything(cfg.train.seed + 1000 * self.dist.rank + 1)
        self.model: nn.Module = self.raw_model
        if self.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[self.device.index] if self.device.type == 'cuda' else None,
                find_unused_parameters=cfg.train.find_unused_parameters)
        self.teacher = build_teacher(cfg, self.device)
        self.criterion = Criterion(cfg, self.device)

        o = cfg.train
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=(o.betas[0], o.betas[1]),
                                          weight_decay=o.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, o)
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp_dtype == torch.float16)
        self.step = 0

        if train_set is None:
            train_set, built_val = build_datasets(cfg)
            val_set = val_set if val_set is not None else built_val
        self.train_set = train_set
        self.hooks: list[Hook] = []
        if val_set is not None:
            self.hooks.append(PSNRValidation(val_set, cfg.data.val_clips, cfg.train.seed))
        self.hooks.extend(hooks or [])

        resume_data = ckpt.load_training_checkpoint(Path(resume)) if resume else None
        self.run_dir = self._make_run_dir(run_dir, resume)
        if resume_data is not None:
            self._restore(resume_data, Path(resume))  # type: ignore[arg-type]
        self.csv_train: CsvLog | None = None
        self.csv_val: CsvLog | None = None
        self.tb = None
        if self.dist.is_main:
            (self.run_dir / 'config.yaml').write_text(cfg.to_yaml())
            truncate = self.step if resume_data is not None else 0
            self.csv_train = CsvLog(self.run_dir / 'train_log.csv', truncate)
            self.csv_val = CsvLog(self.run_dir / 'val_log.csv', truncate)
            self.tb = open_tensorboard(self.run_dir)

    # ---------------------------------------------------------------- set-up helpers
    def _resolve_amp(self) -> torch.dtype | None:
        amp = self.cfg.train.amp
        if amp == 'off':
            return None
        if self.device.type != 'cuda':
            if amp != 'auto' and self.dist.is_main:
                log.warning('train.amp=%s applies to CUDA only; training in float32 on %s',
                            amp, self.device)
            return None
        if amp == 'bf16' or (amp == 'auto' and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16

    def autocast(self) -> Any:
        """Mixed-precision context for forward passes (no-op without AMP)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast('cuda', dtype=self.amp_dtype)

    def _make_run_dir(self, run_dir: str | Path | None, resume: str | Path | None) -> Path:
        if run_dir is None and resume is not None:
            target = Path(resume)
            run_dir = target if target.is_dir() else target.parent
        if run_dir is None:
            name = self.cfg.train.run_name or f'{self.cfg.name}_{time.strftime("%Y%m%d-%H%M%S")}'
            run_dir = Path(expand_path(self.cfg.train.out_dir)) / name
        # Rank 0 names the folder (a timestamp could differ across ranks).
        path = Path(broadcast_object(str(run_dir), self.dist))
        if self.dist.is_main:
            path.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        return path

    def _restore(self, data: dict[str, Any], source: Path) -> None:
        state = data['train_state']
        try:
            self.raw_model.load_state_dict(data['state_dict'], strict=True)
        except RuntimeError as exc:
            raise TrainError(f'resume from {source}: the weights do not fit the configured model '
                             f'({str(exc).splitlines()[0]}); resume with the run\'s own config.yaml'
                             ) from None
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        self.step = int(state['step'])
        rngs = state['rng']
        if len(rngs) == self.dist.world_size:
            set_rng_state(ckpt.unpack_rng(rngs[self.dist.rank]))
        else:
            # The data stream stays exact (it depends on the step only); in-step randomness does not.
            seed_everything(self.cfg.train.seed + 1000 * self.dist.rank + 1 + self.step)
            if self.dist.is_main:
                log.warning('resume from %s: saved by %d processes, now %d; RNG states re-seeded',
                            source, len(rngs), self.dist.world_size)
        if self.dist.is_main:
            log.info('resumed from %s at step %d', source, self.step)

    def _loader(self) -> DataLoader:
        d = self.cfg.data
        sampler = ResumableSampler(len(self.train_set), d.batch, self.cfg.train.seed,  # type: ignore[arg-type]
                                   self.dist.rank, self.dist.world_size, start_step=self.step)
        return DataLoader(SeededDataset(self.train_set), batch_size=d.batch, sampler=sampler,
                          num_workers=d.workers, collate_fn=collate_clips, drop_last=True,
                          pin_memory=self.device.type == 'cuda', persistent_workers=d.workers > 0,
                          # A private generator: creating the iterator must not draw from the
                          # global torch RNG, or resumed runs would diverge.
                          generator=torch.Generator())

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``ckpt_<step>.pt`` atomically (rank 0), prune old ones; all ranks must call."""
        rngs = gather_objects(ckpt.pack_rng(get_rng_state()), self.dist)
        # DDP keeps replicas equal by construction; check it, since a silent divergence (a
        # parameter updated outside backward, a rank-dependent branch) would corrupt the run.
        hashes = gather_objects(state_hash(self.raw_model), self.dist)
        if len(set(hashes)) > 1:
            raise TrainError(f'step {self.step}: model weights differ across ranks ({hashes}); '
                             'check for rank-dependent code paths or parameters outside autograd')
        path = None
        if self.dist.is_main:
            path = self.run_dir / ckpt.checkpoint_name(self.step)
            d = self.cfg.data
            train_state = {
                'step': self.step,
                'optimizer': self.optimizer.state_dict(),
                'scheduler': self.scheduler.state_dict(),
                'scaler': self.scaler.state_dict() if self.scaler.is_enabled() else {},
                'rng': rngs,
                'world_size': self.dist.world_size,
                'rank_hashes': hashes,
                'sampler': {'seed': self.cfg.train.seed,
                            'position': self.step * d.batch * self.dist.world_size},
                'train_config': self.cfg.to_dict(),
            }
            self.raw_model.save_checkpoint(path, extra={'train_state': train_state})
            ckpt.prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
        barrier(self.dist)
        return path

    def save_final(self, wall_s: float) -> Path | None:
        """Weights-only ``model_final.pt`` with a short training summary (rank 0)."""
        if not self.dist.is_main:
            return None
        path = self.run_dir / 'model_final.pt'
        self.raw_model.save_checkpoint(path, extra={'training': {
            'steps': self.step, 'config_name': self.cfg.name, 'wall_time_s': wall_s,
            'world_size': self.dist.world_size, 'train_config': self.cfg.to_dict()}})
        return path

    # ---------------------------------------------------------------- the loop
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on a batch ``lq, gt: (B, T, 3, H, W)``; returns loss values."""
        lq = batch['lq'].to(self.device, non_blocking=True)
        gt = batch['gt'].to(self.device, non_blocking=True)
        dcfg = self.cfg.distill
        with self.autocast():
            out = self.model(lq)
        out = out.float()  # losses in float32: Charbonnier's eps and VGG features need it
        if 'weight' in batch:
            # a pixel of weight w is pulled towards w * gt + (1 - w) * out: by the share w of its
            # error, through every loss term (real rain's targets are sure only inside their masks)
            w = batch['weight'].to(self.device, non_blocking=True)
            gt = w * gt + (1.0 - w) * out.detach()
        gt_loss, parts = self.criterion(out, gt, lq, self.step)
        values = {k: v.detach() for k, v in parts.items()}
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                target = self.teacher(lq).float()
            teacher_loss = self.criterion.losses.charbonnier_loss(out, target.detach())
            total = dcfg.gt_weight * gt_loss + dcfg.weight * teacher_loss
            values['teacher'] = teacher_loss.detach()
        else:
            total = gt_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            values['grad_norm'] = torch.nn.utils.clip_grad_norm_(
                self.raw_model.parameters(), self.cfg.train.grad_clip).detach()
        lr = self.optimizer.param_groups[0]['lr']  # the rate this step uses (before the schedule moves)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values = {'loss': total.detach(), **values}
        names = list(values)
        stacked = all_reduce_mean(torch.stack([values[k].float() for k in names]), self.dist)
        result = dict(zip(names, stacked.tolist()))
        result['lr'] = lr
        if not math.isfinite(result['loss']) and self.amp_dtype != torch.float16:
            # (fp16 overflow is the GradScaler's business: it skips the step and lowers the scale.)
            raise TrainError(f'non-finite loss {result["loss"]} at step {self.step}; lower train.lr, '
                             'set train.grad_clip, or resume from an earlier checkpoint')
        return result

    def train(self, max_steps: int | None = None) -> dict[str, Any]:
        """Run until ``cfg.train.iterations`` (or `max_steps` more steps), checkpointing on the way.

        Returns:
            summary: final step, last logged losses, last validation metrics, run folder.
        """
        o = self.cfg.train
        end = o.iterations if max_steps is None else min(o.iterations, self.step + max_steps)
        if self.step >= end:
            return {'step': self.step, 'run_dir': str(self.run_dir)}
        self.model.train()
        loader_iter = iter(self._loader())
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=o.iterations, initial=self.step, desc='train', dynamic_ncols=True)
        t_start = time.perf_counter()
        t_window, steps_window = t_start, 0
        sums: dict[str, float] = {}
        last: dict[str, float] = {}
        val: dict[str, float] = {}
        stop = _StopFlag.install(enabled=not self.dist.distributed)
        try:
            while self.step < end:
                batch = next(loader_iter)
                result = self.train_step(batch)
                self.step += 1
                steps_window += 1
                last = result
                for k, v in result.items():  # loss terms are logged as means over the interval
                    sums[k] = sums.get(k, 0.0) + v
                if bar is not None:
                    bar.update(1)
                    if self.step % max(1, min(o.log_interval, 10)) == 0:
                        bar.set_postfix(loss=f'{result["loss"]:.4f}', lr=f'{result["lr"]:.2e}')
                if self.step % o.log_interval == 0 or self.step == end:
                    now = time.perf_counter()
                    rate = steps_window / max(now - t_window, 1e-9)
                    means = {k: (result[k] if k == 'lr' else v / steps_window) for k, v in sums.items()}
                    self._log_train(means, rate, now - t_start)
                    t_window, steps_window, sums = now, 0, {}
                if self.step % o.eval_interval == 0 or self.step == o.iterations:
                    val = self.run_hooks() or val
                if self.step % o.ckpt_interval == 0 or self.step == end:
                    self.save_checkpoint()
                elif stop.requested:
                    self.save_checkpoint()
                if stop.requested:
                    log.warning('interrupted: checkpoint at step %d written; resume with --resume %s',
                                self.step, self.run_dir)
                    raise KeyboardInterrupt
        finally:
            stop.uninstall()
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t_start
        if self.step >= o.iterations:
            self.save_final(wall)
        if self.tb is not None:
            self.tb.flush()
        return {'step': self.step, 'run_dir': str(self.run_dir), 'last': last, 'val': val,
                'wall_time_s': wall}

    def run_hooks(self) -> dict[str, float]:
        """Run validation/extra hooks (every rank calls; hooks decide who works) and log results."""
        metrics: dict[str, float] = {}
        for hook in self.hooks:
            metrics.update(hook(self, self.step) or {})
        barrier(self.dist)
        if metrics and self.dist.is_main:
            assert self.csv_val is not None
            self.csv_val.write({'step': self.step, **metrics})
            if self.tb is not None:
                for k, v in metrics.items():
                    self.tb.add_scalar(f'val/{k}', v, self.step)
            log.info('step %d: %s', self.step, ', '.join(f'{k}={v:.3f}' for k, v in metrics.items()))
        return metrics

    def _log_train(self, result: dict[str, float], rate: float, elapsed: float) -> None:
        if not self.dist.is_main:
            return
        samples = rate * self.cfg.data.batch * self.dist.world_size
        row = {'step': self.step, **result, 'it_per_s': rate, 'clips_per_s': samples,
               'elapsed_s': elapsed}
        assert self.csv_train is not None
        self.csv_train.write(row)
        if self.tb is not None:
            for k, v in result.items():
                self.tb.add_scalar(f'train/{k}', v, self.step)
            self.tb.add_scalar('train/it_per_s', rate, self.step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def config_from_run_dir(run_dir: Path, overrides: list[str] | None = None) -> TrainConfig:
    """The config a run folder was trained with (its config.yaml), plus overrides."""
    import yaml
    path = Path(run_dir) / 'config.yaml'
    if not path.is_file():
        raise TrainError(f'{run_dir} has no config.yaml; pass --config with the run\'s config')
    return config_from_dict(yaml.safe_load(path.read_text()), overrides)
