"""The training loop shared by every mode, on Hugging Face Accelerate.

One :class:`Engine` runs one :class:`~titok.training.task.Task` under any launcher (plain
``python``, ``torchrun``, ``accelerate launch``; one or many processes and machines, CPU or GPU):

* processes: Accelerate's ``Accelerator``; on machines without GPUs it runs the CPU backend
  (gloo), so ``torchrun --nproc_per_node N`` works there too. Each process reads its own part
  of the data (:func:`titok.data.build_loader` with its rank); gradients are averaged by DDP;
* precision: ``training.mixed_precision`` ("no", "fp16" with a grad scaler, "bf16");
* steps: ``gradient_accumulation_steps`` micro-batches per optimizer step; gradient clipping
  at ``max_grad_norm``; AdamW without weight decay on norms, biases, embeddings and latent
  tokens; linear warm-up then cosine decay to ``end_lr``; EMA of the model after each step;
* checkpoints every ``save_every`` steps and at the end (:mod:`~titok.training.checkpointing`),
  the last ``keep_last`` kept; ``resume=True`` restores weights, EMA, optimizers, schedules, the
  grad scaler, every process's RNG states and data position, and the task's state, so the run
  continues exactly as if it had not stopped;
* monitoring: TensorBoard scalars (losses, learning rates, gradient norms, images/s, skipped
  samples) and ``metrics.jsonl`` every ``log_every`` steps, reconstruction grids every
  ``image_every`` steps, a progress bar with ETA;
* at the end of the run, the model (EMA weights when on) is exported in the
  ``save_pretrained`` format into ``<output_dir>/export``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from titok.data import SKIP_KINDS
from titok.errors import CheckpointError, ConfigError
from titok.loading.weights import load_strict
from titok.training import checkpointing as ckpt
from titok.training.config import Recipe
from titok.training.ema import EMA
from titok.training.monitor import Monitor
from titok.training.optim import lr_factor, parameter_groups
from titok.training.step import EngineOptimizer, EngineStepContext, check_finite
from titok.training.task import BatchLoader, OptimizerSpec, Task

logger = logging.getLogger("titok.training")


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves.

    Attributes:
        output_dir: the run folder.
        start_step: step the run started from (0, or the resumed checkpoint's step).
        step: step reached.
        history: this process's logs of every step of this run (mean over micro-batches).
        skipped: damaged samples this process skipped, per kind.
        checkpoint: the last checkpoint written.
        export_dir: the exported model (None if the run stopped before ``max_train_steps``).
    """

    output_dir: Path
    start_step: int
    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    checkpoint: Path | None = None
    export_dir: Path | None = None


class WrongCheckpoint(CheckpointError):
    """A checkpoint of another training mode in the run folder (not damage: no fallback)."""


def _make_accelerator(recipe: Recipe) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # Several runs in one process (tests, notebooks) each get fresh settings; the process
    # group itself (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    has_gpu = torch.cuda.is_available()
    t = recipe.training
    if t.mixed_precision == "fp16" and not has_gpu:
        raise ConfigError(
            f"{recipe.source}: training.mixed_precision=fp16 needs a GPU; use 'bf16' or 'no' on a CPU"
        )
    try:
        return Accelerator(
            cpu=not has_gpu,
            mixed_precision=t.mixed_precision,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            step_scheduler_with_optimizer=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{recipe.source}: cannot set up training: {exc}") from exc


class Engine:
    """Runs a task's training to ``training.max_train_steps`` (or ``stop_at_step``).

    Args:
        task: the mode to train (holds the recipe).
        resume: continue from the latest checkpoint in the output folder (start fresh if there
            is none).
        output_dir: overrides ``experiment.output_dir``.
    """

    def __init__(self, task: Task, resume: bool = False, output_dir: str | Path | None = None) -> None:
        self.task = task
        self.recipe = task.recipe
        self.resume = resume
        self.output_dir = Path(output_dir if output_dir is not None else self.recipe.experiment.output_dir)
        self.modules: dict[str, nn.Module] = {}
        #: updates skipped for a non-finite loss or gradient, per optimizer (training.on_nonfinite: skip)
        self.nonfinite_skipped: dict[str, int] = {}
        self.prepared: dict[str, nn.Module] = {}
        self.optimizers: dict[str, EngineOptimizer] = {}
        self.ema: EMA | None = None
        self.loader: BatchLoader | None = None
        self.step = 0

    # ------------------------------------------------------------------ setup
    def _setup(self, data: bool = True) -> None:
        """Accelerator, modules, optimizers, EMA (and, with ``data``, the loader and the resume).

        ``data=False`` builds what exporting a checkpoint needs, without the training data.
        """
        from accelerate.utils import set_seed

        recipe, t = self.recipe, self.recipe.training
        self.accelerator = acc = _make_accelerator(recipe)
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = t.enable_tf32
            torch.backends.cudnn.allow_tf32 = t.enable_tf32
        if data:
            self._check_output_dir()
            self.task.check_data()  # fail fast on a wrong data path, before building models
        set_seed(t.seed)  # the same initial weights on every process
        self.modules = self.task.build(acc)
        if "model" not in self.modules:
            raise ValueError(f"task {self.task.mode!r} built no 'model' module")
        if data:
            self.loader = self.task.loader(acc.process_index, acc.num_processes)

        specs = self.task.optimizers()
        trained = {s.module for s in specs}
        opt_cfg = recipe.optimizer
        raw_optimizers = []
        for spec in specs:
            groups = parameter_groups(
                self.modules[spec.module],
                opt_cfg.weight_decay,
                spec.learning_rate,
                opt_cfg.embedding_lr_scale,
            )
            raw_optimizers.append(
                torch.optim.AdamW(
                    groups, lr=spec.learning_rate, betas=(opt_cfg.beta1, opt_cfg.beta2), eps=opt_cfg.epsilon
                )
            )
        names = sorted(trained)
        prepared = acc.prepare(*[self.modules[n] for n in names], *raw_optimizers)
        prepared = prepared if isinstance(prepared, tuple | list) else (prepared,)
        self.prepared = dict(zip(names, prepared[: len(names)], strict=True))
        for name, module in self.modules.items():
            if name not in self.prepared:
                self.prepared[name] = module.to(acc.device)
        for spec, opt in zip(specs, prepared[len(names) :], strict=True):
            params = [p for g in opt.param_groups for p in g["params"]]
            self.optimizers[spec.name] = EngineOptimizer(spec, opt, self._scheduler(opt, spec), params)

        if t.use_ema:
            self.ema = EMA(self.modules["model"], decay=t.ema_decay)
        set_seed(t.seed, device_specific=True)  # distinct noise per process from here on
        if self.resume and data:
            self._load_latest()

    def _check_output_dir(self) -> None:
        latest = ckpt.latest_checkpoint(self.output_dir)
        if latest is not None and not self.resume:
            raise ConfigError(
                f"{self.output_dir}: already holds checkpoints (latest {latest.name}); pass --resume to "
                "continue that run or choose another output folder"
            )
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for leftover in ckpt.clean_interrupted(self.output_dir):
                logger.warning("removed %s, left by an interrupted checkpoint save", leftover)
            (self.output_dir / "recipe.yaml").write_text(
                yaml.safe_dump(self.recipe.to_dict(), sort_keys=False)
            )
        self.accelerator.wait_for_everyone()

    def _scheduler(self, optimizer: Any, spec: OptimizerSpec) -> torch.optim.lr_scheduler.LambdaLR:
        s, total = self.recipe.lr_scheduler, self.recipe.training.max_train_steps - spec.start_step
        base = spec.learning_rate
        factor: Callable[[int], float] = lambda i: lr_factor(i, s.warmup_steps, total, base, s.end_lr, s.name)  # noqa: E731
        return torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer, factor)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> Path:
        acc, root, step = self.accelerator, self.output_dir, self.step
        if acc.is_main_process:
            ckpt.prepare_staging(root, step)
        acc.wait_for_everyone()
        staging = ckpt.staging_path(root, step)
        if acc.is_main_process:
            for name in self.optimizers_modules():
                check_finite(self.modules[name], name, step)
                ckpt.save_tensors(self.modules[name].state_dict(), staging / f"{name}.safetensors")
            if self.ema is not None:
                ckpt.save_tensors(self.ema.tensors(), staging / "ema.safetensors")
            scaler = acc.scaler.state_dict() if getattr(acc, "scaler", None) is not None else None
            state = {
                "step": step,
                "optimizers": {n: o.optimizer.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: o.scheduler.state_dict() for n, o in self.optimizers.items()},
                "scaler": scaler,
                "ema_updates": self.ema.num_updates if self.ema is not None else 0,
                "task": self.task.state_dict(),
            }
            ckpt.save_torch(state, staging / "state.pt")
        assert self.loader is not None
        rank_state = {
            "rng": ckpt.capture_rng(),
            "data": self.loader.state_dict(),
            "task": self.task.rank_state_dict(),
        }
        ckpt.save_torch(rank_state, ckpt.rank_file(staging, acc.process_index))
        acc.wait_for_everyone()
        final = ckpt.checkpoint_path(root, step)
        if acc.is_main_process:
            meta = {"world_size": acc.num_processes, "mode": self.task.mode}
            final = ckpt.commit(root, step, meta, self.recipe.experiment.keep_last)
            logger.info("checkpoint %s written", final)
        acc.wait_for_everyone()
        return final

    def optimizers_modules(self) -> list[str]:
        """Names of the modules that have an optimizer (those saved in checkpoints)."""
        return sorted({o.spec.module for o in self.optimizers.values()})

    def _load_latest(self) -> None:
        """Resume from the newest intact checkpoint; a damaged one (a cut or garbled file) is
        reported and the one before it is tried."""
        found = ckpt.list_checkpoints(self.output_dir)
        if not found:
            logger.warning("no checkpoint in %s: starting from scratch", self.output_dir)
            return
        saved = None
        for folder in reversed(found):
            try:
                saved = self._read_checkpoint(folder)
                break
            except CheckpointError as exc:
                if isinstance(exc, WrongCheckpoint):
                    raise
                logger.warning("%s is damaged (%s): trying the checkpoint before it", folder.name, exc)
        if saved is None:
            raise CheckpointError(f"{self.output_dir}: every checkpoint is damaged ({len(found)} tried)")
        if folder != found[-1]:
            logger.warning("resuming from %s, the newest intact checkpoint", folder.name)
        meta, tensors, ema_tensors, state, rank_state = saved
        self._load_weights(folder, tensors, ema_tensors, state)
        for name, opt in self.optimizers.items():
            opt.optimizer.load_state_dict(state["optimizers"][name])
            opt.scheduler.load_state_dict(state["schedulers"][name])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state.get("task", {}))
        self.step = int(meta["step"])

        world = self.accelerator.num_processes
        if rank_state is not None:
            ckpt.restore_rng(rank_state["rng"])
            assert self.loader is not None
            self.loader.load_state_dict(rank_state["data"])
            self.task.load_rank_state_dict(rank_state.get("task", {}))
        else:
            from accelerate.utils import set_seed

            logger.warning(
                "%s was written by %s processes, this run has %s: weights and optimizers resume, the data "
                "order and random streams restart",
                folder,
                meta.get("world_size"),
                world,
            )
            set_seed(self.recipe.training.seed + self.step, device_specific=True)
        logger.info("resumed from %s at step %d", folder, self.step)

    def _load_weights(
        self, folder: Path, tensors: dict[str, Any], ema_tensors: dict[str, Any] | None, state: dict[str, Any]
    ) -> None:
        for name in self.optimizers_modules():
            load_strict(self.modules[name], tensors[name], str(folder / f"{name}.safetensors"))
        if self.ema is not None:
            if ema_tensors is not None:
                self.ema.load_tensors(ema_tensors, state["ema_updates"])
            else:
                logger.warning("%s has no EMA weights: the average restarts from the current weights", folder)
                self.ema = EMA(self.modules["model"], decay=self.recipe.training.ema_decay)

    def export_checkpoint(self, step: int | None = None, directory: str | Path | None = None) -> Path:
        """Export the model of checkpoint ``step`` (None: the latest) without training.

        For a run stopped on purpose before ``max_train_steps`` (``training.stop_at_step``), which
        writes checkpoints but no export. The training data is not read. Returns the export folder,
        by default ``<run>/export-<step>`` (loadable with ``from_pretrained``, like ``export/``).
        """
        found = ckpt.list_checkpoints(self.output_dir)
        if step is None:
            folder = found[-1] if found else None
        else:
            folder = ckpt.checkpoint_path(self.output_dir, step)
        if folder is None or folder not in found:
            have = ", ".join(str(ckpt.checkpoint_step(p)) for p in found) or "none"
            wanted = "no checkpoint" if step is None else f"no checkpoint at step {step}"
            raise CheckpointError(f"{self.output_dir}: {wanted} (steps saved: {have})")
        self._setup(data=False)
        meta, tensors, ema_tensors, state, _ = self._read_checkpoint(folder)
        self._load_weights(folder, tensors, ema_tensors, state)
        self.step = int(meta["step"])
        target = Path(directory) if directory is not None else self.output_dir / f"export-{self.step}"
        return self._export(target)

    def _read_checkpoint(self, folder: Path) -> tuple[Any, ...]:
        """Every file of ``folder`` this process needs, read and checked before anything is changed:
        (meta, module tensors, EMA tensors or None, state, this rank's state or None).

        Raises :class:`WrongCheckpoint` for a checkpoint of another mode (not a fallback case) and
        :class:`CheckpointError` for a damaged one.
        """
        meta = ckpt.read_meta(folder)
        if meta.get("mode") != self.task.mode:
            raise WrongCheckpoint(f"{folder}: a {meta.get('mode')!r} checkpoint, not {self.task.mode!r}")
        if not isinstance(meta.get("step"), int):
            raise CheckpointError(f"{folder}: meta.json has no step")
        tensors = {
            name: ckpt.load_tensors(folder / f"{name}.safetensors") for name in self.optimizers_modules()
        }
        state = ckpt.load_torch(folder / "state.pt")
        if not isinstance(state, dict) or not {"optimizers", "schedulers"} <= set(state):
            raise CheckpointError(f"{folder}: state.pt lacks the optimizer states")
        for name in self.optimizers:
            if name not in state["optimizers"]:
                raise CheckpointError(f"{folder}: no state for optimizer {name!r}")
        ema_path = folder / "ema.safetensors"
        ema = ckpt.load_tensors(ema_path) if self.ema is not None and ema_path.is_file() else None
        rank_state = None
        if self.loader is not None and int(meta.get("world_size", 1)) == self.accelerator.num_processes:
            rank_state = ckpt.load_torch(ckpt.rank_file(folder, self.accelerator.process_index))
        return meta, tensors, ema, state, rank_state

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[dict[str, Any]]:
        """The loader's batches, moved to the device by the task.

        Reading runs under ``fork_rng``: the DataLoader draws its base seed from torch's global
        generator when its iterator starts, which a resumed run does at another step than an
        uninterrupted one; the training random stream must not see that draw.
        """
        assert self.loader is not None
        device = self.accelerator.device
        stream = iter(self.loader)
        while True:
            with torch.random.fork_rng(devices=[]):
                batch = next(stream, None)
            if batch is None:
                return
            yield self.task.to_device(batch, device)

    def _reduce_logs(self, window: list[dict[str, float]]) -> dict[str, float]:
        """Mean over the window's steps, then over processes (same keys on every process)."""
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for logs in window:
            for k, v in logs.items():
                sums[k] += v
                counts[k] += 1
        keys = sorted(sums)
        values = torch.tensor(
            [sums[k] / counts[k] for k in keys], dtype=torch.float64, device=self.accelerator.device
        )
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(keys, values.tolist(), strict=True))

    def _skipped_totals(self) -> dict[str, float]:
        assert self.loader is not None
        counts = self.loader.skipped
        values = torch.tensor([float(counts.get(k, 0)) for k in SKIP_KINDS], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        return {f"data/skipped_{k}": v for k, v in zip(SKIP_KINDS, values.tolist(), strict=True)}

    def _preview(self, monitor: Monitor, batch: dict[str, Any], count: int) -> None:
        model = self.modules["model"]
        flags = {m: m.training for m in model.modules()}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            model.eval()
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self._averaged(model):
                rows = self.task.preview_grid(model, batch, count)
        finally:
            for m, flag in flags.items():
                m.training = flag
        if rows:
            monitor.images(self.step, rows)

    def run(self) -> TrainResult:
        """Train; returns a :class:`TrainResult` (on every process)."""
        self._setup()
        acc, recipe = self.accelerator, self.recipe
        t, e = recipe.training, recipe.experiment
        end = min(t.max_train_steps, t.stop_at_step or t.max_train_steps)
        result = TrainResult(self.output_dir, start_step=self.step, step=self.step)
        monitor = Monitor(
            self.output_dir, t.max_train_steps, self.step, acc.is_main_process, e.progress_bar, self.task.mode
        )
        ctx = EngineStepContext(
            acc, self.prepared, self.modules, self.optimizers, t, self.nonfinite_skipped, self.output_dir
        )
        images_per_step = t.batch_size * t.gradient_accumulation_steps * acc.num_processes
        batches = self._batches()
        window: list[dict[str, float]] = []
        window_start = time.perf_counter()
        last_saved = None
        try:
            while self.step < end:
                ctx.step = self.step
                ctx.logs = {}
                micro: dict[str, list[float]] = defaultdict(list)
                for _ in range(t.gradient_accumulation_steps):
                    batch = next(batches)
                    with acc.accumulate(*[self.prepared[n] for n in self.optimizers_modules()]):
                        logs = self.task.train_step(batch, ctx)
                    for k, v in logs.items():
                        micro[k].append(float(v))
                if self.ema is not None:
                    self.ema.update(self.modules["model"])
                self.step += 1
                step_logs = {k: sum(v) / len(v) for k, v in micro.items()}
                step_logs.update(ctx.logs)
                result.history.append(step_logs)
                window.append(step_logs)
                monitor.advance({"loss": step_logs.get(self.task.main_loss, float("nan"))})

                if self.step % e.log_every == 0 or self.step == end:
                    elapsed = time.perf_counter() - window_start
                    scalars = self._reduce_logs(window)
                    scalars.update(self._skipped_totals())
                    scalars.update(
                        {f"nonfinite_skipped/{k}": float(v) for k, v in self.nonfinite_skipped.items()}
                    )
                    scalars["perf/images_per_second"] = len(window) * images_per_step / max(elapsed, 1e-9)
                    monitor.scalars(self.step, scalars)
                    window, window_start = [], time.perf_counter()
                if e.image_every and self.step % e.image_every == 0 and acc.is_main_process and e.num_images:
                    self._preview(monitor, batch, e.num_images)
                if self.step % e.save_every == 0 or self.step == end:
                    last_saved = self._save_checkpoint()
        finally:
            monitor.close()
        result.step = self.step
        result.checkpoint = last_saved or ckpt.latest_checkpoint(self.output_dir)
        assert self.loader is not None
        result.skipped = dict(self.loader.skipped)
        if self.step >= t.max_train_steps:
            result.export_dir = self._export()
        acc.wait_for_everyone()
        return result

    def _averaged(self, model: nn.Module) -> AbstractContextManager[Any]:
        """A block with the EMA weights in ``model`` (its own weights when EMA is off)."""
        return self.ema.swapped_in(model) if self.ema is not None else nullcontext()

    def _export(self, directory: Path | None = None) -> Path:
        directory = directory if directory is not None else self.output_dir / "export"
        if self.accelerator.is_main_process:
            model = self.modules["model"]
            check_finite(model, "model", self.step)
            with self._averaged(model):
                self.task.export(model, directory)
            logger.info("exported the %s model to %s", "EMA" if self.ema is not None else "final", directory)
        return directory


def train(task: Task, resume: bool = False, output_dir: str | Path | None = None) -> TrainResult:
    """Run ``task`` (any mode: :func:`titok.training.make_task`) with a fresh :class:`Engine`."""
    return Engine(task, resume=resume, output_dir=output_dir).run()
