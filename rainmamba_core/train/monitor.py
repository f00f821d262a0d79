"""What a training run reports: validation PSNR, replica hashes, CSV and TensorBoard logs."""
from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .sampling import SeededDataset, sample_seed

log = logging.getLogger(__name__)


def psnr_clip(out: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean PSNR (dB) over frames of (T, 3, H, W) clips in [0, 1], by the authors' convention
    (quantised to 0-255 like their ``tensor2img``, RGB, no border crop; eval.metrics)."""
    from rainmamba_core.eval.metrics import psnr, to_uint8
    values = [psnr(to_uint8(out[t]), to_uint8(gt[t])) for t in range(out.shape[0])]
    return float(sum(values) / len(values))


class PSNRValidation:
    """Hook: PSNR of the model and of the rainy input on a fixed held-out set (rank 0 only).

    Args:
        dataset: items with ``lq``/``gt`` of shape (T, 3, H, W).
        clips: how many items to score (indices 0..clips-1, each with a fixed seed).
        seed: base of the per-clip seeds (kept apart from the training stream's seeds).
    """

    def __init__(self, dataset: Dataset, clips: int, seed: int) -> None:
        self.dataset = SeededDataset(dataset)
        n = len(dataset)  # type: ignore[arg-type]
        self.items = [(i % n, sample_seed(seed ^ 0x5EEDBA11, i)) for i in range(min(clips, n) if n else 0)]

    @torch.no_grad()
    def __call__(self, trainer: Any, step: int) -> dict[str, float] | None:
        if not trainer.dist.is_main or not self.items:
            return None
        model = trainer.raw_model
        was_training = model.training
        model.eval()
        psnr_out, psnr_in = [], []
        for item in self.items:
            sample = self.dataset[item]
            lq = sample['lq'].unsqueeze(0).to(trainer.device)
            with trainer.autocast():
                out = model(lq).float()
            psnr_out.append(psnr_clip(out[0], sample['gt']))
            psnr_in.append(psnr_clip(sample['lq'], sample['gt']))
        model.train(was_training)
        result = {'val_psnr': sum(psnr_out) / len(psnr_out), 'val_psnr_input': sum(psnr_in) / len(psnr_in)}
        result['val_gain_db'] = result['val_psnr'] - result['val_psnr_input']
        return result


# --------------------------------------------------------------------------------------------
# Logging helpers.


def state_hash(model: nn.Module) -> str:
    """SHA-256 of a model's state_dict (names, dtypes, shapes and bytes), for replica checks."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f'{name}:{t.dtype}:{tuple(t.shape)};'.encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return digest.hexdigest()


class CsvLog:
    """Append-only CSV with a header fixed by the first row; rows past `truncate_after` dropped."""

    def __init__(self, path: Path, truncate_after: int | None = None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.exists():
            with path.open(newline='') as fh:
                rows = list(csv.DictReader(fh))
                self.fields = list(rows[0].keys()) if rows else None
            if truncate_after is not None and rows and self.fields:
                # Rows logged after the checkpoint we resume from belong to the lost future.
                kept = [r for r in rows if int(float(r['step'])) <= truncate_after]
                with path.open('w', newline='') as fh:
                    writer = csv.DictWriter(fh, fieldnames=self.fields)
                    writer.writeheader()
                    writer.writerows(kept)

    def write(self, row: dict[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with self.path.open('a', newline='') as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction='ignore')
            if new:
                writer.writeheader()
            writer.writerow(row)


_TB_WARNED = False


def open_tensorboard(run_dir: Path) -> Any:
    """A SummaryWriter on ``run_dir/tb``, or None (warned once per process) without tensorboard."""
    global _TB_WARNED
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if _TB_WARNED:
            return None
        _TB_WARNED = True
        log.warning('tensorboard is not installed: TensorBoard logging is off (CSV logs still '
                    'written); `pip install tensorboard` to enable it')
        return None
    return SummaryWriter(str(run_dir / 'tb'))
