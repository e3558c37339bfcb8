"""The training loop: read it top to bottom.

`train()` runs in every process of an accelerate launch (or alone). The data feed (data/feed.py)
gives uint8 batches already on the device, resident or streamed; per optimizer step the train step
(train/step.py, the one `demakeup bench` times) runs forward + the brief's loss as one module under the
accelerator's precision -> backward -> clip to norm 1 -> AdamW -> LR schedule. Per epoch: evaluate on
val, keep the best weights, checkpoint. At the end: the best weights are evaluated on test (results.json).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from torch.nn.parallel import DistributedDataParallel

from demakeup_dist import atomic
from demakeup_dist.data.feed import DataFeed
from demakeup_dist.data.shardset import ShardSet
from demakeup_dist.models import build_model, model_tasks
from demakeup_dist.results import EpochRecord, Quality, RunResults
from demakeup_dist.rundir import RunDir
from demakeup_dist.text import hms
from demakeup_dist.train import checkpoint as ckpt
from demakeup_dist.train.batching import efficiency_note, plan_batch
from demakeup_dist.train.config import TrainConfig
from demakeup_dist.train.distributed import StopRequest, make_accelerator, resolve_precision
from demakeup_dist.train.ema import WeightEMA
from demakeup_dist.train.evaluation import evaluate, sample_panel
from demakeup_dist.train.recipe import make_optimizer, make_scheduler
from demakeup_dist.train.resume import (
    check_resume_compatible, check_same_model, check_same_shards, check_world_size, resolve_resume,
)
from demakeup_dist.train.runlock import RunLock
from demakeup_dist.train.utilisation import StepProfiler, dense_peak, mfu, parse_steps, train_flops_per_image
from demakeup_dist.train.tracking import (
    RunTracker, Throughput, failures_recorded, log, setup_logging,
)
from demakeup_dist.train.step import ModelLoss, TrainStep, plain_state_dict
from demakeup_dist.weights import describe, load_trained, save_weights


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the run stops and keeps its last good checkpoint."""


def train(config: TrainConfig, shards: Path, run_dir: Path, resume: str | None = None,
          allow_other_shards: bool = False) -> dict:
    """Train `config.model` on `shards` into `run_dir`. Returns the test metrics (rank 0; {} elsewhere).

    `allow_other_shards`: resume even though `shards` is not the shard set the checkpoint trained on.
    """
    run = RunDir(run_dir)
    with RunLock(run, enabled=os.environ.get("RANK", "0") == "0"), failures_recorded(run):
        return _train(config, ShardSet.open(shards), run, resume, allow_other_shards)


def _train(config: TrainConfig, shard_set: ShardSet, run: RunDir, resume: str | None,
           allow_other_shards: bool) -> dict:
    shards, shards_id = shard_set.root, shard_set.identity
    if resume == "auto" and run.read_status().get("status") == "finished":
        return {"status": "finished"}
    resume_point = resolve_resume(run, resume)
    start_from = resume_point and resume_point.checkpoint
    world = int(os.environ.get("WORLD_SIZE", "1"))
    plan = plan_batch(config, world)
    config = replace(config, batch_size=plan.global_batch)  # what batch_per_gpu resolves to is recorded
    if start_from is not None:
        check_resume_compatible(run, config)
        check_same_shards(resume_point.state, shards_id, shards, allow_other_shards)
        world_note = check_world_size(resume_point, world, config.strategy)
    else:
        check_same_model(run, config.model)

    tasks = model_tasks(config.model)
    if "sr" in tasks and not shard_set.has_hr:
        raise ValueError(f"{config.model} trains the 4x SR head, but the shards in {shards} hold no HR images")
    local_batch = plan.per_step
    accelerator = make_accelerator(config, micro_batch_for_deepspeed=plan.per_gpu)
    is_main, device = accelerator.is_main_process, accelerator.device

    def reduce_sum(t: torch.Tensor) -> torch.Tensor:
        return accelerator.reduce(t, reduction="sum") if world > 1 else t

    if is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        run.clear_stop()  # a stop request belongs to the job it stopped
        run.write_config(config)
    accelerator.wait_for_everyone()
    setup_logging(run, is_main)
    precision = resolve_precision(config.precision)
    log.info("%s on %d process(es) (%s, %s); %s", config.model, world, device, precision,
             plan.describe(gpus=device.type == "cuda"))
    if device.type == "cuda" and (note := efficiency_note(plan)):
        log.info("%s", note)
    workers = config.resolved_num_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    feed = DataFeed(
        shard_set, with_hr="sr" in tasks, batch_size=local_batch, device=device, cache=config.data_cache,
        rank=accelerator.process_index, world_size=world, local_rank=accelerator.local_process_index,
        num_workers=workers, barrier=accelerator.wait_for_everyone,
        agree=lambda bad: reduce_sum(torch.tensor(float(bad), device=device)).item() > 0,
        # One store name per run: runs on one node never share (or delete) each other's.
        token=hashlib.sha256(str(run.path.resolve()).encode()).hexdigest()[:8], progress=is_main)
    log.info(feed.describe())
    steps_per_epoch = feed.steps_per_epoch
    total_steps = steps_per_epoch * config.epochs
    peak, peak_line = dense_peak(device, precision)
    log.info("%d steps/epoch x %d epochs; %s", steps_per_epoch, config.epochs, peak_line)
    flops_per_image = train_flops_per_image(config.model, shard_set.image_size, config.model_args) if peak else 0.0
    profiler = StepProfiler(parse_steps(config.profile_steps), run.profile_trace(accelerator.process_index),
                            cuda=device.type == "cuda")

    # Same seed on every rank -> identical initial weights; data order is seeded separately per epoch.
    from accelerate.utils import set_seed
    set_seed(config.seed)
    model_args = {**config.model_args, **({"grad_checkpointing": True} if config.grad_checkpointing else {})}
    net = build_model(config.model, **model_args).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        # DeepSpeed's ZeRO flattens parameters through byte views, which need contiguous strides (measured).
        if config.channels_last and config.strategy == "ddp":
            net = net.to(memory_format=torch.channels_last)
    deepspeed = config.strategy == "deepspeed"
    input_dtype = torch.bfloat16 if deepspeed and precision == "bf16" else None
    model_loss = ModelLoss.for_config(net, config, input_dtype)
    optimizer = make_optimizer(net, config, lr=plan.lr)
    scheduler = make_scheduler(optimizer, total_steps, config.warmup_fraction)
    model, optimizer, scheduler = accelerator.prepare(model_loss, optimizer, scheduler)
    # DeepSpeed clips inside its engine (gradient_clipping in its config).
    train_step = TrainStep(accelerator, model, optimizer, scheduler, tasks, 0 if deepspeed else config.grad_clip_norm,
                           config.grad_accum)
    state = ckpt.TrainState(shards_id=shards_id, world_size=world)
    # The weight average (config ema_decay) is evaluated and saved as best; it resumes with the run.
    ema = WeightEMA(net, config.ema_decay) if config.ema_decay else None
    if start_from is not None:
        for warning in resume_point.passed_over:
            log.warning("warning: %s", warning)
        if world_note:
            log.info("%s", world_note)
        ckpt.load_checkpoint(accelerator, start_from, state, ema)
        state.shards_id, state.world_size = shards_id, world
        if is_main:
            run.truncate_metrics(state.global_step)
        log.info("resumed from %s: epoch %d, step %d of the epoch", start_from, state.epoch, state.step_in_epoch)

    # model(x) without targets gives the outputs; under DeepSpeed it must go through the engine.
    eval_model = model if deepspeed else net
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    tracker = RunTracker(run, config, is_main, restarts)
    stop = StopRequest(run)
    meter = Throughput()
    val_baselines: dict[str, Quality] = {}

    def save(reason: str) -> None:
        mid_epoch = state.step_in_epoch > 0
        state.loss_sum = reduce_sum(loss_sum).item() if mid_epoch else 0.0
        state.loss_steps = loss_steps if mid_epoch else 0
        path = ckpt.save_checkpoint(accelerator, run, state, config.keep_checkpoints, ema)
        log.info("checkpoint %s (%s)", path.name, reason)

    def status(kind: str, **extra) -> None:
        tracker.update_status(status=kind, model=config.model, epoch=state.epoch, step=state.global_step,
                              total_steps=total_steps, best_val_psnr=state.best_val_psnr, **extra)

    with stop:
        status("running")
        for epoch in range(state.epoch, config.epochs):
            model.train()
            epoch_start = time.perf_counter()
            batches = feed.train(seed=config.seed, epoch=epoch, start_step=state.step_in_epoch)
            # A resumed epoch continues the loss sum of its steps before the checkpoint (rank 0 holds it).
            carried = state.loss_sum if accelerator.is_main_process else 0.0
            loss_sum, loss_steps = torch.tensor(carried, device=device), state.loss_steps
            state.loss_sum, state.loss_steps = 0.0, 0
            window_loss, window_steps = torch.zeros((), device=device), 0
            meter.reset()
            for step_in_epoch in range(state.step_in_epoch, steps_per_epoch):
                waited = time.perf_counter()
                batch = next(batches)
                meter.data_wait += time.perf_counter() - waited
                profiler.before(state.global_step + 1)
                loss = train_step(batch)
                if ema is not None:
                    ema.update()

                state.step_in_epoch, state.global_step = step_in_epoch + 1, state.global_step + 1
                profiler.after(state.global_step, last=state.global_step == total_steps)
                meter.images += config.batch_size
                loss_sum, loss_steps = loss_sum + loss, loss_steps + 1
                window_loss, window_steps = window_loss + loss, window_steps + 1
                last_step = state.global_step == total_steps
                if state.global_step % config.stop_check_every == 0 or last_step:
                    stop_reason, bad = stop.agreed(accelerator, ~torch.isfinite(loss))
                    if bad:
                        status("failed", error=f"non-finite loss at step {state.global_step}")
                        tracker.finish()
                        raise NonFiniteLoss(
                            f"loss became NaN/inf at step {state.global_step} (epoch {epoch}); the last good "
                            f"checkpoint is kept in {run.checkpoints_dir}, but a resume is exact and would "
                            f"meet it again: start a new --run-dir with a lower --lr (this run: {config.lr:g})"
                        )
                    if stop_reason:
                        save(f"{stop_reason}: {stop.signalled or 'stop request'}")
                        status(stop_reason)
                        tracker.finish()
                        return {"status": stop_reason}
                if config.save_every_steps and state.global_step % config.save_every_steps == 0 and not last_step:
                    save("periodic")
                if state.global_step % config.log_every == 0 or step_in_epoch + 1 == steps_per_epoch:
                    img_s, wait = meter.rates()
                    mean_loss = (reduce_sum(window_loss) / (window_steps * world)).item()
                    lr = scheduler.get_last_lr()[0]
                    eta = (total_steps - state.global_step) * config.batch_size / max(img_s, 1e-9)
                    step_metrics = {"loss": mean_loss, "lr": lr, "img_per_s": img_s, "data_wait": wait}
                    if peak:
                        step_metrics["mfu"] = mfu(img_s, flops_per_image, world, peak)
                    if device.type == "cuda":
                        step_metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                    extra = "".join(f" {label} {fmt % (scale * step_metrics[key])}" for key, label, fmt, scale in (
                        ("mfu", "MFU", "%.1f%%", 100), ("gpu_mem_gb", "peak mem", "%.2f GB", 1)) if key in step_metrics)
                    log.info("epoch %d/%d step %d/%d loss %.4f lr %.3g %.1f img/s data-wait %.0f%%%s ETA %s",
                             epoch + 1, config.epochs, state.global_step, total_steps, mean_loss, lr, img_s,
                             100 * wait, extra, hms(eta))
                    tracker.log_step(step_metrics, state.global_step)
                    status("running", img_per_s=img_s, eta_s=eta)
                    window_loss, window_steps = torch.zeros((), device=device), 0
                    meter.reset()

            state.epoch, state.step_in_epoch = epoch + 1, 0
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                train_loss = (reduce_sum(loss_sum) / (max(loss_steps, 1) * world)).item()
                train_s = time.perf_counter() - epoch_start
                with ema.swapped() if ema is not None else contextlib.nullcontext():
                    val, first = evaluate(eval_model, feed.eval("val"), tasks, device, reduce_sum,
                                          accelerator.autocast, baselines=not val_baselines, input_dtype=input_dtype)
                    improved = val.psnr > state.best_val_psnr  # the same on every rank (reduced)
                    best = _weights(accelerator, model) if improved else None
                # The val baselines (the line a val-PSNR plot compares with) are measured once per process.
                val_baselines = val_baselines or val.baselines
                record = EpochRecord(epoch=epoch + 1, step=state.global_step, train_loss=train_loss,
                                     lr=scheduler.get_last_lr()[0], train_s=train_s,
                                     epoch_s=time.perf_counter() - epoch_start,
                                     val=replace(val, baselines=val_baselines))
                images = {}
                if improved:
                    state.best_val_psnr, state.best_epoch = val.psnr, epoch + 1
                    if is_main:
                        save_weights(best, run.best_weights, describe(
                            config.model, config.model_args, image_size=shard_set.image_size, epoch=epoch + 1))
                        if first is not None:
                            panel, path = sample_panel(first, config.sample_panels), run.sample_panel(epoch + 1)
                            path.parent.mkdir(exist_ok=True)
                            with atomic.atomic_path(path) as tmp:
                                panel.save(tmp, format="PNG")
                            images["val"] = panel
                tracker.log_eval(record, images)
                log.info("epoch %d val: %s%s; epoch %.1f s (train %.1f s)", epoch + 1, record.val,
                         " best" if improved else "", record.epoch_s, record.train_s)
                status("running", last_metrics=record.flat())
            save("epoch end")

    final = _weights(accelerator, model)
    if is_main:
        save_weights(final, run.final_weights, describe(
            config.model, config.model_args, image_size=shard_set.image_size, epoch=config.epochs))
    accelerator.wait_for_everyone()
    results = evaluate_best(config, run, accelerator, feed.eval("test"), tasks, reduce_sum, state.best_epoch)
    feed.close()
    status("finished", last_metrics=results.flat())
    tracker.finish(results)
    return results.to_dict()


def evaluate_best(config, run: RunDir, accelerator, test_batches, tasks, reduce_sum, best_epoch) -> RunResults:
    """Evaluate the best weights on the test split with a plain (unwrapped) copy of the network."""
    net, _ = load_trained(run.best_weights, config.model, accelerator.device)
    test, _ = evaluate(net, test_batches, tasks, accelerator.device, reduce_sum, accelerator.autocast,
                       baselines=True, flip_ensemble=config.flip_ensemble)
    results = RunResults(config.model, "test", best_epoch, test)
    if accelerator.is_main_process:
        run.write_results(results.to_dict())
        log.info("test (best weights): %s", test)
    return results


def _weights(accelerator, model) -> dict[str, torch.Tensor]:
    """A CPU copy of the network's plain state dict (gathers ZeRO-3 shards; strips ModelLoss's and
    torch.compile's prefixes). A copy: the EMA swap puts the network's own weights back afterwards.

    Only DeepSpeed goes through accelerate's unwrap_model: it imports DeepSpeed whenever it is installed,
    whose accelerator probe warns on every CPU run."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        state = accelerator.get_state_dict(model)
    else:
        state = (model.module if isinstance(model, DistributedDataParallel) else model).state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in plain_state_dict(state).items()}

