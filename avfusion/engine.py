"""The one training loop every task uses: schedule, AMP, accumulation, DDP, checkpoints, exact resume.

How a task calls it:

    from avfusion.engine import OptimConfig, train

    def loss_fn(model, batch):               # batch: the loader's dict, already on the device
        out = model(batch["image"], batch["audio"])       # call `model` (maybe DDP-wrapped)
        return out["loss"], {"loss_image": out["loss_image"]}   # (scalar tensor, named scalars)

    def eval_fn(model, epoch, step):         # optional; model unwrapped and in eval mode
        return {"acc": ...}                  # returned dicts are kept in result.evals

    result = train(model, loss_fn, train_set, cfg.optim, out_dir, seed=cfg.seed,
                   device=cfg.device, workers=cfg.data.workers, job_config=cfg,
                   eval_fn=eval_fn, eval_epochs=lambda epoch: epoch % 10 == 0,
                   extra_logs=[(out_dir / "knn.csv", "epoch")])
    result.model, result.history[-1]["loss"], result.evals

What it does (spec 3.2, 4, 6; MAE `engine_pretrain.py` / `util/lr_sched.py`):
- param groups from `avfusion.optim.param_groups` (or `param_groups=` given by the task);
  lr = blr * batch_size * accum_iter * world_size / 256 unless `optim.lr` is set; per-iteration
  warmup + half-cosine, set at every accumulation boundary with fractional epoch e + it/len.
- gradient accumulation (loss / accum_iter, DDP `no_sync` between boundaries); AMP (bf16/fp16)
  on CUDA only, GradScaler for fp16; optional grad clipping.
- DDP when `avfusion.distributed.init_distributed()` finds WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU),
  BatchNorm -> SyncBatchNorm (CUDA; CPU ranks keep per-rank BatchNorm), `DistributedSampler(seed=seed, drop_last)` also for one process, so
  the sample order depends only on (seed, epoch).
- after each epoch (and its eval): `out/checkpoints/checkpoint_latest.pth` (atomic) =
  {state_dict, optimizer, scaler, epoch (completed), step (optimizer steps), rng (per rank:
  python, numpy, torch, cuda), sampler {seed, epoch, world_size}, config}.
- a call on a folder holding a checkpoint resumes from it exactly; rows of `log.csv` (column
  `step`), `epochs.csv` and `extra_logs` (column `epoch`) written after that checkpoint are dropped.
  The checkpoint stores `config_hash` (`avfusion.config.numbers_hash`: every key but device,
  workers, time budget); a resume with another config is refused (ConfigError naming the keys)
  before any state is loaded (`avfusion <task> --fresh` starts afresh).
- `eval_fn(model, epoch, step)` runs after the epochs where `eval_epochs(epoch)` holds (all if None),
  before the checkpoint; with `eval_at_start` also once before training on a fresh run (epoch -1, step 0).
- `out/log.csv`: one row per optimizer step (epoch, step, lr, loss, named logs); `out/epochs.csv`:
  one row per epoch (means, wall time); progress lines with rate and ETA.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as dist_utils
from .checkpoints import (_rng_state, _set_rng_state, check_resume_config, checkpoint_path, load_checkpoint,
                          resolve_checkpoint)
from .config import numbers_hash, to_dict
from .io import atomic_torch_save
from .optim import OptimConfig, build_optimizer, param_groups as default_param_groups, set_lr
from .progress import CSVLog, Progress
from .transforms import normalize_batch_images

__all__ = ["OptimConfig", "train", "TrainResult", "checkpoint_path", "resolve_checkpoint", "load_checkpoint",
           "resolve_device", "unwrap", "seed_everything", "move_to_device"]

LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict]]


@dataclass
class TrainResult:
    model: torch.nn.Module                 # unwrapped, on the training device
    history: list[dict]                    # epochs.csv rows (all epochs, earlier runs included)
    evals: dict[int, dict] = field(default_factory=dict)  # epoch -> eval_fn result (this process)
    steps: int = 0                         # optimizer steps done in total
    epochs_done: int = 0
    resumed_from: Optional[int] = None     # completed epochs found in the checkpoint
    stopped_early: bool = False            # time_budget_s reached


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a device; plain 'cuda' means cuda:LOCAL_RANK under DDP."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config key 'device': {name!r} requested but CUDA is not available")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            print(f"note: optim.amp={amp} ignored on {device.type}: mixed precision runs on GPU only")
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            try:
                parsed[k] = float(v) if v not in ("", None) else None
            except ValueError:
                parsed[k] = v
        out.append(parsed)
    return out


def _scalar(value: Any) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


def _batch_clip_ids(dataset: Dataset, batch: Any) -> list[str] | None:
    """Clip ids of a batch whose items carry `index` into a manifest dataset (`rows`), else None."""
    rows = getattr(dataset, "rows", None)
    index = batch.get("index") if isinstance(batch, dict) else None
    if rows is None or not isinstance(index, torch.Tensor):
        return None
    return [str(rows[int(i)].get("clip_id", int(i))) for i in index.reshape(-1).tolist()]


def describe_nonfinite_batch(dataset: Dataset, batch: Any) -> str:
    """Which inputs of a batch hold NaN/inf and which clips they belong to (for the loss error)."""
    tensors = batch.items() if isinstance(batch, dict) else enumerate(batch if isinstance(batch, (list, tuple)) else [])
    bad_items: set[int] = set()
    bad_inputs = []
    for name, value in tensors:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.ndim == 0:
            continue
        finite = torch.isfinite(value.detach()).reshape(value.shape[0], -1).all(dim=1)  # (B,)
        if not bool(finite.all()):
            bad_inputs.append(str(name))
            bad_items.update(torch.nonzero(~finite).reshape(-1).tolist())
    clips = _batch_clip_ids(dataset, batch)
    if bad_inputs:
        where = [clips[i] for i in sorted(bad_items)] if clips else [f"item {i}" for i in sorted(bad_items)]
        return f"non-finite input {', '.join(bad_inputs)} in clip(s) {', '.join(where)}"
    if clips:
        return f"inputs are finite; the batch's clips: {', '.join(clips)}"
    return "inputs are finite"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The RNG seed of item `index` in epoch `epoch` of a run with seed `seed` (62-bit, distinct per triple
    for index < 2**30 and epoch < 2**20)."""
    return ((seed % (1 << 12)) << 50 | (epoch % (1 << 20)) << 30 | index) & ((1 << 62) - 1)


class SampleSeeded(Dataset):
    """`dataset` with item i of epoch e drawn under torch's RNG seeded by sample_seed(seed, e, i) (then
    restored), plus `sample_seed` in the item: every random choice of the item (window, frame, crop,
    gain; the pretraining mask) is then the same whatever the rank, worker or batch it lands in, so
    N ranks x batch b equal 1 process x batch N*b. The engine sets `epoch` before each epoch."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def rows(self):  # the manifest rows of the wrapped dataset (names the clips of a bad batch)
        return getattr(self.dataset, "rows", None)

    def __getitem__(self, index: int) -> dict:
        s = sample_seed(self.seed, self.epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            item = dict(self.dataset[index])
        item["sample_seed"] = torch.tensor(s, dtype=torch.int64)
        return item


@dataclass
class _TrainState:
    """What one `train` call carries from step to step: the (maybe DDP-wrapped) model, its optimiser
    and loader, where the logs go, and the counters a checkpoint saves."""
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    base_lr: float
    dev: torch.device
    rank: int
    world: int
    sampler: DistributedSampler
    loader: DataLoader
    iters: int                               # loader iterations per epoch (whole optimizer steps)
    out_dir: Path
    extra_logs: list[tuple[Path, str]]
    step: int = 0                            # optimizer steps done in total
    step_log: Optional[CSVLog] = None
    epoch_log: Optional[CSVLog] = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.csv"

    @property
    def epochs_path(self) -> Path:
        return self.out_dir / "epochs.csv"


def _setup(model: torch.nn.Module, train_set: Dataset, cfg: OptimConfig, out_dir: Path, seed: int, device: str,
           workers: int, collate_fn, param_groups, ramp_prefixes, extra_logs) -> _TrainState:
    """Device, process group, seeds, optimiser (+ AMP scaler), DDP wrapper and the sharded loader."""
    dev = resolve_device(device)
    dist_utils.init_distributed(dev.type)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    seed_everything(seed + rank)
    cfg = cfg.for_world(world)  # optim.effective_batch -> accum_iter for this many ranks

    model = model.to(dev)
    groups = param_groups if param_groups is not None else default_param_groups(
        model, cfg, ramp_prefixes=ramp_prefixes)
    base_lr = cfg.absolute_lr(world)
    optimizer = build_optimizer(groups, cfg, base_lr)
    amp_dtype = _amp_dtype(cfg.amp, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    net = model
    if world > 1:
        # SyncBatchNorm as the official code under DDP; PyTorch's SyncBatchNorm runs on CUDA only, so CPU
        # ranks (gloo: the test SLURM, the rehearsal scale) keep per-rank BatchNorm statistics
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if dev.type == "cuda" else model
        # find_unused_parameters: some parameters get no gradient by design (the exact dense/factorized
        # fusion drops the key bias, which cancels in the softmax; heads a task does not use)
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)

    if cfg.sample_seeded_rng:
        train_set = SampleSeeded(train_set, seed)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate_fn, drop_last=True, pin_memory=dev.type == "cuda")
    iters = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
    iters -= iters % cfg.accum_iter
    if iters == 0:
        raise ValueError(f"training set of {len(train_set)} items gives no full optimizer step with "
                         f"batch_size={cfg.batch_size} x accum_iter={cfg.accum_iter} x {world} processes")
    return _TrainState(net, optimizer, scaler, amp_dtype, base_lr, dev, rank, world, sampler, loader, iters,
                       out_dir, [(Path(p), col) for p, col in extra_logs])


def _resume(state: _TrainState, run_config: Any) -> Optional[int]:
    """Load the run folder's checkpoint (model, optimiser, scaler, step, RNG) and drop log rows written
    after it; returns the completed epochs it holds (None on a fresh run, whose stale logs are removed)."""
    ckpt_file = checkpoint_path(state.out_dir)
    if not ckpt_file.is_file():
        if state.main:  # a fresh run: logs from an earlier, checkpoint-less attempt are stale
            for path in [state.log_path, state.epochs_path, *(p for p, _ in state.extra_logs)]:
                Path(path).unlink(missing_ok=True)
        return None
    ckpt = load_checkpoint(ckpt_file)
    check_resume_config(ckpt, run_config, ckpt_file)
    unwrap(state.net).load_state_dict(ckpt["state_dict"], strict=True)
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    start_epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
    rng_states = ckpt["rng"]
    _set_rng_state(rng_states[state.rank] if state.rank < len(rng_states) else rng_states[0])
    if state.main:
        CSVLog.truncate_after(state.log_path, "step", state.step)
        for path, column in [(state.epochs_path, "epoch"), *state.extra_logs]:
            CSVLog.truncate_after(path, column, start_epoch - 1)
        print(f"resumed from {ckpt_file}: {start_epoch} epochs, {state.step} steps done")
    dist_utils.barrier()
    return start_epoch


def _evaluate(state: _TrainState, eval_fn, epoch: int, evals: dict[int, dict]) -> None:
    """`eval_fn(unwrapped model, epoch, step)` in eval mode; a returned dict is kept in `evals`."""
    state.net.eval()
    result = eval_fn(unwrap(state.net), epoch, state.step)
    if result is not None:
        evals[epoch] = result
    state.net.train()


def _optimizer_step(state: _TrainState, cfg: OptimConfig, window: dict[str, float]) -> dict[str, float]:
    """Clip (optional), step, zero the grads; returns the step's logs (mean over ranks under DDP)."""
    if cfg.clip_grad is not None:
        state.scaler.unscale_(state.optimizer)
        window["grad_norm"] = _scalar(torch.nn.utils.clip_grad_norm_(state.net.parameters(), cfg.clip_grad))
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    if state.world > 1:  # log the mean over ranks
        values = torch.tensor(list(window.values()), dtype=torch.float64, device=state.dev)
        torch.distributed.all_reduce(values)
        window = dict(zip(window, (values / state.world).tolist()))
    return window


def train_one_epoch(state: _TrainState, loss_fn: LossFn, train_set: Dataset, cfg: OptimConfig, epoch: int,
                    progress: Progress) -> tuple[dict[str, float], float]:
    """One pass over the loader: per-iteration lr, AMP forward, loss / accum_iter backward, an optimizer
    step every accum_iter iterations (one log.csv row each). Returns (epoch means of the logs, last lr)."""
    state.sampler.set_epoch(epoch)
    if isinstance(state.loader.dataset, SampleSeeded):
        state.loader.dataset.epoch = epoch  # (workers are not persistent: each epoch's iterator copies it)
    state.net.train()
    sums: dict[str, float] = {}
    n_rows, lr = 0, 0.0
    window: dict[str, float] = {}
    state.optimizer.zero_grad(set_to_none=True)
    for it, batch in enumerate(state.loader):
        if it >= state.iters:
            break
        if it % cfg.accum_iter == 0:
            lr = set_lr(state.optimizer, cfg, state.base_lr, epoch + it / state.iters)
        batch = normalize_batch_images(move_to_device(batch, state.dev))  # uint8 images: normalised here
        boundary = (it + 1) % cfg.accum_iter == 0
        sync = contextlib.nullcontext() if (boundary or state.world == 1) else state.net.no_sync()
        with sync:
            with torch.autocast(state.dev.type, dtype=state.amp_dtype or torch.float32,
                                enabled=state.amp_dtype is not None):
                loss, logs = loss_fn(state.net, batch)
            loss_value = _scalar(loss)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at epoch {epoch}, iteration {it}: stopping; "
                                         + describe_nonfinite_batch(train_set, batch))
            state.scaler.scale(loss / cfg.accum_iter).backward()
        for k, v in {"loss": loss_value, **{k: _scalar(v) for k, v in logs.items()}}.items():
            window[k] = window.get(k, 0.0) + v / cfg.accum_iter
        if boundary:
            window = _optimizer_step(state, cfg, window)
            if state.main:
                if state.step_log is None:
                    state.step_log = CSVLog(state.log_path, ["epoch", "step", "lr", *window])
                state.step_log.write(epoch=epoch, step=state.step, lr=f"{lr:.6e}",
                                     **{k: repr(v) for k, v in window.items()})
            for k, v in window.items():
                sums[k] = sums.get(k, 0.0) + v
            n_rows += 1
            window = {}
        progress.update(loss=loss_value, lr=lr)
    state.optimizer.zero_grad(set_to_none=True)
    return {k: v / max(n_rows, 1) for k, v in sums.items()}, lr


def _end_epoch(state: _TrainState, epoch: int, epoch_row: dict[str, float], lr: float, epoch_s: float,
               seed: int, run_config: Any) -> None:
    """epochs.csv row, then the checkpoint (every rank's RNG state gathered; written by rank 0)."""
    if state.main:
        if state.epoch_log is None:
            state.epoch_log = CSVLog(state.epochs_path, ["epoch", "step", "lr", *epoch_row, "epoch_s"])
        state.epoch_log.write(epoch=epoch, step=state.step, lr=f"{lr:.6e}", epoch_s=f"{epoch_s:.3f}",
                              **{k: repr(v) for k, v in epoch_row.items()})
    rng_states = dist_utils.all_gather_objects(_rng_state())
    if state.main:
        atomic_torch_save({
            "state_dict": unwrap(state.net).state_dict(), "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else None,
            "epoch": epoch + 1, "step": state.step, "rng": rng_states,
            "sampler": {"seed": seed, "epoch": epoch + 1, "world_size": state.world},
            "config": to_dict(run_config), "config_hash": numbers_hash(run_config),
        }, checkpoint_path(state.out_dir))
    dist_utils.barrier()


def train(model: torch.nn.Module, loss_fn: LossFn, train_set: Dataset, cfg: OptimConfig,
          out_dir: str | Path, *, seed: int = 0, device: str = "auto", workers: int = 0,
          collate_fn: Optional[Callable] = None, param_groups: Optional[list[dict]] = None,
          ramp_prefixes: tuple[str, ...] = ("encoder.image.", "encoder.audio."),
          eval_fn: Optional[Callable[[torch.nn.Module, int, int], Optional[dict]]] = None,
          eval_epochs: Optional[Callable[[int], bool]] = None, eval_at_start: bool = False,
          extra_logs: Iterable[tuple[Path, str]] = (), job_config: Any = None,
          desc: str = "train", progress_every: int = 10) -> TrainResult:
    """Train `model` for cfg.epochs epochs with `loss_fn(model, batch) -> (loss, logs)`; see module doc.
    Steps: set up (device, DDP, optimiser, loader) -> resume from the folder's checkpoint -> per epoch:
    `train_one_epoch`, `eval_fn` where `eval_epochs` says, epochs.csv row + checkpoint."""
    run_config = job_config if job_config is not None else cfg
    state = _setup(model, train_set, cfg, Path(out_dir), seed, device, workers, collate_fn, param_groups,
                   ramp_prefixes, extra_logs)
    cfg = cfg.for_world(state.world)  # optim.effective_batch -> accum_iter for this many ranks (as _setup)
    resumed_from = _resume(state, run_config)
    start_epoch = resumed_from or 0
    evals: dict[int, dict] = {}
    if eval_at_start and eval_fn is not None and resumed_from is None:  # fresh run: probe the init (epoch -1)
        _evaluate(state, eval_fn, -1, evals)

    t_start, stopped_early, epochs_done = time.perf_counter(), False, start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        progress = Progress(total=state.iters, desc=f"{desc} ep {epoch + 1}/{cfg.epochs}", every=progress_every)
        epoch_row, lr = train_one_epoch(state, loss_fn, train_set, cfg, epoch, progress)
        if eval_fn is not None and (eval_epochs is None or eval_epochs(epoch)):
            _evaluate(state, eval_fn, epoch, evals)
        _end_epoch(state, epoch, epoch_row, lr, time.perf_counter() - t_epoch, seed, run_config)
        epochs_done = epoch + 1
        if cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s:
            stopped_early = epoch + 1 < cfg.epochs
            if state.main and stopped_early:
                print(f"time budget {cfg.time_budget_s}s reached after epoch {epoch + 1}: stopping")
            break
    for log in (state.step_log, state.epoch_log):
        if log is not None:
            log.close()
    return TrainResult(model=unwrap(state.net), history=_read_csv(state.epochs_path), evals=evals,
                       steps=state.step, epochs_done=epochs_done, resumed_from=resumed_from,
                       stopped_early=stopped_early)
