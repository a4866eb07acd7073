"""The fine-tuning loop: plain PyTorch, one file.

``fit`` trains one model on one split and writes ``metrics.jsonl``, ``last/`` and ``best/`` (``save_pretrained``
directories; ``last/`` also holds ``trainer_state.pt`` for resuming). ``finetune`` runs a whole configuration: every
ESC-50 fold (cross-validation) or one hold-out split, then a ``summary.json`` with mean and standard deviation.

Reproducibility: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)``; augmentation and dropout draw
from the global torch RNG, whose state is saved with every checkpoint. Resuming from a checkpoint therefore replays
exactly the steps an uninterrupted run would have taken. Under ``torchrun`` every process takes an interleaved share
of each global batch, BatchNorm is synchronised, gradients are averaged, and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .._builder import create_model
from .._fileio import atomic_write, to_json
from ..inference.shard import Shard, current_shard
from ..models._base import AudioClassifier
from .config import ConfigError, RunConfig, TrainConfig, check_output_directory, check_values
from .data import ClipDataset, ClipList, DecodedClips, decode_clips, default_cache_dir, holdout_split, read_clips

_logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.pt"


# -- distributed ------------------------------------------------------------------------------------------------------
def init_distributed(device_kind: str) -> Shard:
    """Join the process group that ``torchrun`` describes in the environment (a no-op for a single process)."""
    shard = current_shard()
    if not shard.distributed:
        return shard
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size(), shard.local_rank)


def _broadcast(value: Any, info: Shard) -> Any:
    if info.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# -- pieces -----------------------------------------------------------------------------------------------------------
def _layer_groups(model: AudioClassifier) -> list[str]:
    """Parameter-name prefixes in forward order, one per 'layer' (up to the first numeric path component)."""
    order: list[str] = []
    for name, _ in model.named_parameters():
        parts = name.split(".")
        cut = next((i + 1 for i, p in enumerate(parts) if p.isdigit()), 1)
        prefix = ".".join(parts[:cut])
        if prefix not in order:
            order.append(prefix)
    return order


def build_optimizer(model: AudioClassifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    head_prefix = model.pretrained_cfg.classifier + "."
    groups: dict[float, list[nn.Parameter]] = {}
    layers = _layer_groups(model)
    for name, param in model.named_parameters():
        is_head = name.startswith(head_prefix)
        if cfg.freeze_backbone and not is_head:
            param.requires_grad_(False)
            continue
        lr = o.lr
        if is_head and o.head_lr is not None:
            lr = o.head_lr
        elif o.layer_decay is not None and not is_head:
            prefix = next(p for p in reversed(layers) if name == p or name.startswith(p + "."))
            depth = len(layers) - 1 - layers.index(prefix)
            lr = o.lr * o.layer_decay**depth
        groups.setdefault(lr, []).append(param)
    param_groups = [{"params": params, "lr": lr, "initial_lr": lr} for lr, params in groups.items()]
    if o.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                 amsgrad=o.amsgrad)  # fmt: skip
    if o.name == "adam":
        return torch.optim.Adam(param_groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                amsgrad=o.amsgrad)  # fmt: skip
    if o.name == "sgd":
        return torch.optim.SGD(param_groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adagrad(param_groups, lr=o.lr, weight_decay=o.weight_decay)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base lr at a global step, for ``torch.optim.lr_scheduler.LambdaLR``."""
    s = cfg.schedule
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = s.warmup_epochs * steps_per_epoch
    floor = s.min_lr_ratio

    def factor(step: int) -> float:
        if s.name == "warmup_rampdown":  # EfficientAT: exponential warm-up, constant, linear ramp-down to the floor
            epoch = step / steps_per_epoch
            up = 1.0 if epoch >= s.warmup_epochs else math.exp(-5.0 * (1.0 - epoch / max(s.warmup_epochs, 1e-8)) ** 2)
            done = min(1.0, max(0.0, (epoch - s.rampdown_start) / max(s.rampdown_epochs, 1e-8)))
            return up * (1.0 - done * (1.0 - floor))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
        if s.name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if s.name == "linear":
            return floor + (1 - floor) * (1 - progress)
        if s.name == "step":
            return s.gamma ** (step // max(1, s.step_epochs * steps_per_epoch))
        return 1.0

    return factor


class BatchAugment:
    """Waveform augmentation (roll, gain, mixup) and, through a hook on ``model.frontend``, spectrogram mixup and
    SpecAugment. Draws from the global torch RNG so that checkpoints capture it."""

    def __init__(self, cfg: TrainConfig, model: AudioClassifier):
        self.cfg = cfg.augment
        self._mix: tuple[torch.Tensor, torch.Tensor] | None = None  # (permutation, lambdas) for the current batch
        spectral = model.frontend_cfg.kind != "waveform"
        self.mix_spectrogram = self.cfg.mixup_on == "spectrogram" and spectral
        self.masks: list[nn.Module] = []
        if spectral:
            import torchaudio

            self.masks += [torchaudio.transforms.FrequencyMasking(self.cfg.freq_mask_width, iid_masks=True)] * (
                self.cfg.freq_masks if self.cfg.freq_mask_width else 0
            )
            self.masks += [torchaudio.transforms.TimeMasking(self.cfg.time_mask_width, iid_masks=True)] * (
                self.cfg.time_masks if self.cfg.time_mask_width else 0
            )
        self.active = False
        self.handle = model.frontend.register_forward_hook(self._on_spectrogram)

    def remove(self) -> None:
        self.handle.remove()

    def _on_spectrogram(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not self.active:
            return None
        if self._mix is not None and self.mix_spectrogram:
            perm, lam = self._mix
            shape = (-1,) + (1,) * (output.dim() - 1)
            output = lam.view(shape) * output + (1 - lam.view(shape)) * output[perm]
        for mask in self.masks:
            output = mask(output)
        return output

    def __call__(self, wave: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        n = wave.shape[0]
        if c.roll_samples:
            shifts = torch.randint(-c.roll_samples, c.roll_samples + 1, (n,)).tolist()
            wave = torch.stack([torch.roll(w, s) for w, s in zip(wave, shifts)])
        low, high = c.gain_db
        if high > low:
            gain_db = torch.empty(n).uniform_(low, high).to(wave.device)
            wave = wave * (10.0 ** (gain_db / 20.0))[:, None]
        self._mix = None
        if c.mixup_alpha > 0 and n > 1:
            lam = torch.distributions.Beta(c.mixup_alpha, c.mixup_alpha).sample((n,))
            lam = torch.maximum(lam, 1 - lam).to(wave.device)
            perm = torch.randperm(n).to(wave.device)
            self._mix = (perm, lam)
            target = lam[:, None] * target + (1 - lam[:, None]) * target[perm]
            if not self.mix_spectrogram:
                wave = lam[:, None] * wave + (1 - lam[:, None]) * wave[perm]
        return wave, target


def _freeze_norm_statistics(model: AudioClassifier) -> None:
    """With a frozen backbone, its normalisation layers keep their pretrained running statistics (eval mode)."""
    head = model.get_classifier()
    head_modules = set(head.modules())
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in head_modules:
            module.eval()


def compute_loss(logits: torch.Tensor, target: torch.Tensor, multilabel: bool, cfg: TrainConfig,
                 class_weights: torch.Tensor | None, output: str | None = None) -> torch.Tensor:  # fmt: skip
    """The loss that goes with the model's output activation, always on logits (softmax -> cross-entropy,
    log_softmax -> NLL, sigmoid -> BCE-with-logits, ...); targets are (soft) class probabilities or multi-hot."""
    from ..layers import loss_for_output

    task = "multilabel" if multilabel else "multiclass"
    output = output or ("sigmoid" if multilabel else "softmax")
    return loss_for_output(output, task, cfg.label_smoothing, class_weights)(logits.float(), target)


@torch.no_grad()
def predict(model: AudioClassifier, dataset: ClipDataset, batch_size: int, device: torch.device,
            autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Logits and targets over a dataset (eval mode)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    logits, targets = [], []
    for wave, target in loader:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits.append(model(wave.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def basic_metrics(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> dict[str, float]:
    """The per-epoch validation score: accuracy (single-label) or mAP over classes with positives (multi-label)."""
    from .. import metrics

    if not multilabel:
        return {"accuracy": metrics.accuracy(logits, targets)}
    return {"map": metrics.mean_average_precision(torch.sigmoid(logits), targets)}


# -- fit --------------------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("-inf")
    metric_name: str = "accuracy"
    val_logits: torch.Tensor | None = None
    val_targets: torch.Tensor | None = None

    @property
    def final_metric(self) -> float:
        return self.history[-1][f"val_{self.metric_name}"] if self.history else float("nan")


def _device_for(cfg: TrainConfig, info: Shard) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available")
        return torch.device("cuda", info.local_rank if info.world_size > 1 else torch.device(want).index or 0)
    return torch.device(want)


def _save_state(directory: Path, model: AudioClassifier, payload: dict[str, Any]) -> None:
    model.save_pretrained(directory)
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(directory / STATE_NAME, buffer.getvalue())


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(to_json(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _gpu_utilization_reader(device: torch.device) -> Callable[[], float | None] | None:
    """A reader of ``torch.cuda.utilization`` (percent busy over NVML's last sample period, 1/6 s to 1 s) when NVML
    can be queried; None on CPU or without pynvml, which stays an optional extra rather than a dependency."""
    if device.type != "cuda":
        return None
    try:
        torch.cuda.utilization(device)
    except Exception:  # pynvml not installed, no NVML library in the driver, or a device NVML cannot query
        return None

    def read() -> float | None:
        try:
            return float(torch.cuda.utilization(device))
        except Exception:  # a transient NVML error costs one sample, not the run
            return None

    return read


def fit(
    model: AudioClassifier,
    train_set: ClipDataset,
    val_set: ClipDataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    multilabel: bool = False,
    resume: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` on ``train_set``, evaluating on ``val_set`` after every epoch; see the module docstring."""
    check_values(cfg, "train.")  # fit is public: a TrainConfig built in Python has not been through validate
    out_dir = Path(out_dir)
    info = init_distributed("cuda" if cfg.device.startswith("cuda") or
                            (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")  # fmt: skip
    device = _device_for(cfg, info)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if device.type == "cuda" else None
    if cfg.amp != "none" and device.type != "cuda":
        _logger.info("train.amp=%s applies on CUDA only; training in float32 on %s", cfg.amp, device)

    if len(train_set) == 0 or len(val_set) == 0:
        raise ConfigError(f"empty split: {len(train_set)} training and {len(val_set)} validation clips")
    global_batch = min(cfg.batch_size, len(train_set))
    if global_batch % info.world_size:
        raise ConfigError(f"train.batch_size {global_batch} is not divisible by {info.world_size} processes")
    steps_per_epoch = len(train_set) // global_batch  # full batches only: every step sees the same batch size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)

    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    class_weights = None
    if cfg.class_weights and not multilabel:
        counts = torch.as_tensor(train_set.class_counts(), dtype=torch.float32)
        class_weights = (counts.sum() / (len(counts) * counts.clamp(min=1))).to(device)
    net: nn.Module = model
    if info.world_size > 1:
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm runs on accelerators only
            _logger.warning("distributed on CPU: BatchNorm statistics are computed per process, not synchronised")
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    result = FitResult(metric_name="map" if multilabel else "accuracy")
    start_epoch, start_step, stale_epochs = 0, 0, 0
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    if resume and (last_dir / STATE_NAME).is_file():
        from .._weights import load_weights

        state = torch.load(last_dir / STATE_NAME, map_location="cpu", weights_only=True)
        load_weights(model, state["model"], source=str(last_dir / STATE_NAME))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        stale_epochs = int(state["stale_epochs"])
        result.history = json.loads(state["history"])
        result.best_epoch, result.best_metric = int(state["best_epoch"]), float(state["best_metric"])
        _logger.info("resuming %s at epoch %d, step %d", out_dir, start_epoch + 1, start_step)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        # On resume the file is rewritten from the checkpoint's history: an epoch that finished after the last
        # checkpoint was written is run again and must not appear twice.
        metrics_lines = "".join(to_json(record) + "\n" for record in result.history)
        atomic_write(out_dir / "metrics.jsonl", metrics_lines.encode())

    augment = BatchAugment(cfg, model)
    gpu_utilization = _gpu_utilization_reader(device)
    from ..layers import ActivationStats, ClassifierHead, grad_norms

    head = model.get_classifier()
    # Per hidden head layer: dead/saturated fractions and activation statistics over the epoch's training steps,
    # and the mean gradient norm of each head layer (why one activation beats another).
    diagnostics = ActivationStats(head) if isinstance(head, ClassifierHead) and len(head.layers) else None

    def checkpoint(epoch: int, step: int) -> None:
        if not info.is_main:
            return
        # The model's weights travel inside the one atomically written state file, so a kill at any instant leaves
        # weights, optimizer and RNG states from the same step (last/model.safetensors is the user-facing copy).
        payload = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "epoch": epoch,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "stale_epochs": stale_epochs,
            "history": json.dumps(result.history),
            "best_epoch": result.best_epoch,
            "best_metric": result.best_metric,
        }
        if device.type == "cuda":
            payload["rng_cuda"] = torch.cuda.get_rng_state(device)
        _save_state(last_dir, model, payload)

    try:
        for epoch in range(start_epoch, cfg.epochs):
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            batches = [
                order[s * global_batch : (s + 1) * global_batch][info.rank :: info.world_size].tolist()
                for s in range(steps_per_epoch)
            ]
            first_step = start_step if epoch == start_epoch else 0
            loader = DataLoader(train_set, batch_sampler=batches[first_step:], num_workers=num_workers,
                                pin_memory=device.type == "cuda", generator=torch.Generator())  # fmt: skip
            net.train()
            if cfg.freeze_backbone:
                _freeze_norm_statistics(model)
            augment.active = True
            seen, loss_sum, started = 0, 0.0, time.perf_counter()
            # Data wait: host time from the end of one step until the loader hands over the next batch (the first
            # batch's wait includes the workers' start-up, which every epoch pays). It is host time on purpose, and
            # needs no synchronisation of its own: whether loading is the bottleneck depends on how long the loop
            # stands still for data. The step below already ends in a sync (``loss.item()``), so on CUDA the GPU has
            # nothing queued during this wait and it is also GPU idle time; without that sync, kernels still running
            # would overlap the wait, which would then overstate GPU idleness but never understate it.
            data_wait, step_end = 0.0, started
            utilization: list[float] = []
            next_utilization = started + 1.0  # NVML samples over up to 1 s: reading more often adds nothing
            grad_sums: dict[str, float] = {}
            steps_run = 0
            if diagnostics is not None:
                diagnostics.reset()
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, initial=first_step, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       disable=not (progress and info.is_main), leave=False, file=sys.stderr)  # fmt: skip
            for step, (wave, target) in enumerate(loader, start=first_step):
                data_wait += time.perf_counter() - step_end
                wave = wave.to(device, non_blocking=True)
                target = target.to(device, non_blocking=True)
                wave, target = augment(wave, target)
                with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                    enabled=autocast_dtype is not None):  # fmt: skip
                    logits = net(wave)
                loss = compute_loss(logits, target, multilabel, cfg, class_weights, model.output_activation)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if diagnostics is not None:
                    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
                    for key, value in grad_norms(head).items():
                        grad_sums[key] = grad_sums.get(key, 0.0) + value / scale
                steps_run += 1
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                seen += wave.shape[0] * info.world_size
                loss_sum += loss.item() * wave.shape[0]
                rate = seen / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.4f}", samples_per_s=f"{rate:.1f}")
                bar.update(1)
                if cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0 and \
                        step + 1 < steps_per_epoch:  # fmt: skip
                    checkpoint(epoch, step + 1)
                if gpu_utilization is not None and time.perf_counter() >= next_utilization:
                    sample = gpu_utilization()
                    if sample is not None:
                        utilization.append(sample)
                    next_utilization = time.perf_counter() + 1.0
                step_end = time.perf_counter()
            bar.close()
            augment.active = False
            epoch_diagnostics = diagnostics.summary() if diagnostics is not None else {}
            epoch_diagnostics.update({k: v / max(1, steps_run) for k, v in grad_sums.items()})
            train_time = time.perf_counter() - started

            stop = False
            if info.is_main:
                logits, targets = predict(model, val_set, max(1, global_batch), device, autocast_dtype)
                val_loss = float(compute_loss(logits, targets, multilabel, cfg, None, model.output_activation))
                scores = basic_metrics(logits, targets, multilabel)
                record = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / max(1, seen // info.world_size),
                    "val_loss": val_loss,
                    **{f"val_{k}": v for k, v in scores.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_seconds": round(train_time, 3),
                    "samples_per_s": round(seen / max(train_time, 1e-9), 2),
                    # under torchrun, rank 0's own wait (every process loads its own share of the batch)
                    "data_wait_s": round(data_wait, 3),
                    "data_wait_fraction": round(data_wait / max(train_time, 1e-9), 4),
                    **epoch_diagnostics,
                }
                if utilization:  # CUDA with pynvml only: mean of about one NVML reading per second of the epoch
                    record["gpu_utilization_percent"] = round(sum(utilization) / len(utilization), 1)
                result.history.append(record)
                result.val_logits, result.val_targets = logits, targets
                _append_jsonl(out_dir / "metrics.jsonl", record)
                metric = scores[result.metric_name]
                if metric > result.best_metric:
                    result.best_metric, result.best_epoch, stale_epochs = metric, epoch + 1, 0
                    model.save_pretrained(best_dir)
                else:
                    stale_epochs += 1
                print(
                    f"epoch {epoch + 1}/{cfg.epochs}  train_loss {record['train_loss']:.4f}  val_loss {val_loss:.4f}  "
                    f"val_{result.metric_name} {metric:.4f}  lr {record['lr']:.2e}  "
                    f"{record['samples_per_s']:.1f} samples/s",
                    file=sys.stderr,
                )
                checkpoint(epoch + 1, 0)
                stop = cfg.early_stopping_patience is not None and stale_epochs >= cfg.early_stopping_patience
            stop = _broadcast(stop, info)
            if info.world_size > 1:
                dist.barrier()
            if stop:
                _logger.info("early stopping after %d epochs without improvement", stale_epochs)
                break
    finally:
        augment.remove()
        if diagnostics is not None:
            diagnostics.remove()
    return result


# -- whole runs -------------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def new_run_dir(cfg: RunConfig, config_path: str | Path | None) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(config_path).stem) if config_path else "run"
    name = cfg.run_name or f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.output_dir) / name


def finetune(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    folds: list[int] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a configuration into ``run_dir``: each ESC-50 test fold (or the hold-out split), then ``summary.json``."""
    import yaml

    cfg.validate()
    info = init_distributed("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    run_dir = Path(_broadcast(str(run_dir), info))  # every process writes (rank 0) or reads the same directory
    # Whatever can fail on the configuration, the data or the model fails here, before the run directory exists:
    # a run that stops before its first checkpoint leaves nothing behind that --resume could continue.
    if info.is_main:
        check_output_directory(run_dir, "run directory")
    _device_for(cfg.train, info)
    clips = read_clips(cfg.data)
    if cfg.data.kind == "esc50":
        wanted = folds or cfg.data.folds
        bad = [f for f in wanted if f not in cfg.data.folds and f not in (1, 2, 3, 4, 5)]
        if bad:
            raise ConfigError(f"--fold must be in 1-5, got {bad}")
    # The model as trained: weights (download or checkpoint), architecture arguments and head for these classes.
    probe = build_finetune_model(cfg, clips)
    from ..layers import loss_for_output

    loss_for_output(probe.output_activation, "multilabel" if clips.multilabel else "multiclass",
                    cfg.train.label_smoothing)  # fmt: skip
    cache_dir = default_cache_dir(cfg.data)
    if info.is_main:
        decoded = decode_clips(clips, probe.sample_rate, cfg.data.clip_seconds, cache_dir, cfg.data.num_workers,
                               progress=progress)  # fmt: skip
    if info.world_size > 1:
        dist.barrier()
    if not info.is_main:
        decoded = decode_clips(clips, probe.sample_rate, cfg.data.clip_seconds, cache_dir, 0, progress=False)
    del probe

    kept_index = {p: i for i, p in enumerate(decoded.paths)}
    if cfg.data.kind == "esc50":
        splits = {}
        for fold in wanted:
            test = [kept_index[str(p)] for p, g in zip(clips.paths, clips.groups) if g == fold and str(p) in kept_index]
            train = [
                kept_index[str(p)] for p, g in zip(clips.paths, clips.groups) if g != fold and str(p) in kept_index
            ]
            splits[f"fold{fold}"] = (train, test)
    else:
        train_i, val_i = holdout_split(clips, cfg.data.val_fraction, cfg.train.seed)
        splits = {
            "holdout": (
                [kept_index[str(clips.paths[i])] for i in train_i if str(clips.paths[i]) in kept_index],
                [kept_index[str(clips.paths[i])] for i in val_i if str(clips.paths[i]) in kept_index],
            )
        }
    for name, (train_rows, val_rows) in splits.items():
        if not train_rows or not val_rows:
            message = f"split {name!r} has {len(train_rows)} training and {len(val_rows)} validation clips"
            if decoded.failed:
                path, problem = next(iter(decoded.failed.items()))
                message += f"; {len(decoded.failed)} of {len(clips)} clips could not be read (first: {path}: {problem})"
            raise ConfigError(message)

    created = info.is_main and not run_dir.exists()
    if info.is_main:
        atomic_write(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    try:
        return _run_splits(cfg, run_dir, splits, decoded, info, resume=resume, progress=progress)
    except BaseException:
        if created:
            _remove_unstarted_run(run_dir, list(splits))
        raise


def _remove_unstarted_run(run_dir: Path, split_names: list[str]) -> None:
    """Remove a run directory this run created, when it failed before saving anything to resume from: the
    directory then holds config.yaml and split directories with an empty metrics.jsonl. A checkpoint, a finished
    split or any file this run did not write keeps the whole directory as it is."""
    split_dirs = {run_dir / name for name in split_names}
    disposable = {run_dir / "config.yaml"} | {d / "metrics.jsonl" for d in split_dirs}
    try:
        for entry in run_dir.rglob("*"):
            if entry in split_dirs and entry.is_dir():
                continue
            if entry in disposable and entry.is_file() and (entry.name == "config.yaml" or not entry.stat().st_size):
                continue
            return
        for path in disposable:
            path.unlink(missing_ok=True)
        for directory in split_dirs:
            if directory.exists():
                directory.rmdir()
        run_dir.rmdir()
    except OSError as err:  # the original error matters more than a failed clean-up
        _logger.warning("could not remove the unstarted run directory %s: %s", run_dir, err)


def _run_splits(cfg: RunConfig, run_dir: Path, splits: dict[str, tuple[list[int], list[int]]],
                decoded: DecodedClips, info: Shard, *, resume: bool, progress: bool) -> dict[str, Any]:  # fmt: skip
    fold_summaries = {}
    for name, (train_rows, val_rows) in splits.items():
        fold_dir = run_dir / name
        summary_path = fold_dir / "summary.json"
        if resume and summary_path.is_file():
            fold_summaries[name] = json.loads(summary_path.read_text())
            continue
        torch.manual_seed(cfg.train.seed)
        model = build_finetune_model(cfg, decoded)
        result = fit(model, ClipDataset(decoded, train_rows), ClipDataset(decoded, val_rows), cfg.train, fold_dir,
                     multilabel=decoded.multilabel, resume=resume, num_workers=cfg.data.num_workers,
                     progress=progress)  # fmt: skip
        if info.is_main:
            summary = {
                "split": name,
                "metric": result.metric_name,
                "final": result.final_metric,
                "best": result.best_metric,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "train_clips": len(train_rows),
                "val_clips": len(val_rows),
                "skipped_clips": len(decoded.failed),
            }
            atomic_write(summary_path, (to_json(summary, indent=2) + "\n").encode())
            fold_summaries[name] = summary
    summary: dict[str, Any] = {}
    if info.is_main:
        metric = next(iter(fold_summaries.values()))["metric"]
        summary = {
            "metric": metric,
            "splits": fold_summaries,
            "final": _mean_std([s["final"] for s in fold_summaries.values()]),
            "best_epoch": _mean_std([s["best"] for s in fold_summaries.values()]),
            "skipped_clips": decoded.failed,
            "note": "'final' is the last epoch's score; 'best_epoch' picks the epoch on the evaluation split itself "
            "and is therefore optimistic.",
        }
        atomic_write(run_dir / "summary.json", (to_json(summary, indent=2) + "\n").encode())
        f = summary["final"]
        print(f"{run_dir}: {metric} {f['mean']:.4f} ± {f['std']:.4f} over {len(fold_summaries)} split(s)",
              file=sys.stderr)  # fmt: skip
    return summary


def build_finetune_model(cfg: RunConfig, decoded: DecodedClips | ClipList) -> AudioClassifier:
    """The configured model with a new classifier for the dataset's classes (task set from the labels); the clips
    may be decoded or only listed, only their label names and task are read."""
    m = cfg.model
    pretrained = m.pretrained and m.checkpoint_path is None
    model = create_model(m.name, pretrained=pretrained, checkpoint_path=m.checkpoint_path, **m.kwargs)
    task = "multilabel" if decoded.multilabel else "multiclass"
    model.pretrained_cfg = model.pretrained_cfg.replace(task=task, clip_seconds=cfg.data.clip_seconds)
    model.reset_classifier(len(decoded.label_names), decoded.label_names, head=cfg.head_config())
    return model
