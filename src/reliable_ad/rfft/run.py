"""The run-level parts of RFFT training: start or resume, validate and act on collapse, checkpoint,
and finish (export). Kept apart from the trainer's step so each reads on its own.
"""

from __future__ import annotations

import json
import logging

import torch

from reliable_ad.core.config import to_dict
from reliable_ad.generation.seeds import derive_seed
from reliable_ad.rfft import checkpoint as ckpt
from reliable_ad.rfft.feedback import judge_decide
from reliable_ad.rfft.validation import background_distance, background_diversity, image_grid
from reliable_ad.core.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

# Settings a resumed run may change; every other field must equal the original run's.
_MAY_CHANGE = {("optim", "max_steps"), ("runtime", "log_every"), ("runtime", "checkpoint_every"),
               ("runtime", "keep_checkpoints"), ("runtime", "tensorboard"), ("validation",)}


def _identity(cfg_dict: dict) -> dict:
    out = {}
    for section, value in cfg_dict.items():
        if (section,) in _MAY_CHANGE or section == "reliable_ad_version":
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if (section, k) not in _MAY_CHANGE}
        out[section] = value
    return out


def resume_or_start(trainer) -> str | None:
    """Check the run folder, load the newest checkpoint if there is one; returns a stop reason when the
    run was already ended by the collapse monitor (the rerun then only re-exports)."""
    from reliable_ad.rfft.trainer import STOPPED

    out = trainer.out_dir
    config_path = out / "config.json"
    if config_path.is_file():
        old = _identity(json.loads(config_path.read_text(encoding="utf-8")))
        new = _identity(json.loads(json.dumps(to_dict(trainer.cfg))))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise ValueError(f"{out} holds an RFFT run with a different config ({', '.join(changed)} differ); "
                             "rerun with the same config to resume (max_steps, logging and validation may change), "
                             "or choose another --out")
    found = ckpt.list_checkpoints(out)
    trainer.saved_steps = {s for s, _ in found}  # read by every process before any writes: they agree
    trainer.write_config()
    stopped_path = out / STOPPED
    if stopped_path.is_file():
        stopped = json.loads(stopped_path.read_text(encoding="utf-8"))
        _load(trainer, ckpt.checkpoint_dir(out, stopped["weights_step"]), weights_only=True)
        trainer.step = int(stopped["step"])
        logger.warning("%s: the run was stopped (%s); exporting its weights again", out, stopped["reason"])
        return stopped["reason"]
    if found:
        step, folder = found[-1]
        _load(trainer, folder)
        logger.info("resumed %s at step %d", out, step)
    return None


def _load(trainer, folder, *, weights_only: bool = False) -> None:
    scaler = getattr(trainer.accelerator, "scaler", None)
    state = ckpt.load_checkpoint(folder, trainable=trainer.trainable,
                                 optimizer=None if weights_only else trainer.optimizer,
                                 lr_scheduler=None if weights_only else trainer.lr_scheduler,
                                 scaler=None if weights_only else scaler)
    if not weights_only:
        trainer.step = int(state["step"])
        trainer.micro_step = int(state["micro_step"])
        trainer.monitor.load_state_dict(state.get("monitor", {}))
        trainer.validations = list(state.get("validations", []))


def save(trainer) -> None:
    """Checkpoint the current step (main process writes; everyone waits) and prune old ones."""
    acc = trainer.accelerator
    if acc.is_main_process:
        ckpt.save_checkpoint(trainer.out_dir, trainer.step, trainable=trainer.trainable, optimizer=trainer.optimizer,
                             lr_scheduler=trainer.lr_scheduler, scaler=getattr(acc, "scaler", None),
                             state=trainer.checkpoint_state())
        healthy = trainer.monitor.last_healthy_step
        ckpt.prune_checkpoints(trainer.out_dir, trainer.cfg.runtime.keep_checkpoints,
                               protect={healthy} if healthy is not None else set())
    trainer.saved_steps.add(trainer.step)
    acc.wait_for_everyone()


def maybe_checkpoint(trainer, *, force: bool = False) -> None:
    """Save when due (every `checkpoint_every` steps, or `force`) unless this step is saved already.

    Decided from in-memory state only, so that all processes agree without racing on the disk.
    """
    every = trainer.cfg.runtime.checkpoint_every
    if trainer.step not in trainer.saved_steps and (force or (every and trainer.step % every == 0)):
        save(trainer)


@torch.no_grad()
def run_validation(trainer) -> dict:
    """Full generations of the held-out products by the student and (once) by the original model:
    available rate, background diversity, distance to the original, and a grid PNG."""
    vcfg, seed = trainer.cfg.validation, trainer.cfg.runtime.seed
    items = trainer.val_items[: vcfg.num_products]
    jobs = [(it, derive_seed(seed, f"rfft-val/{it.key}", k)) for it in items for k in range(vcfg.images_per_product)]
    bs = trainer.cfg.sampling.batch_size
    student, alphas, accepted = [], [], []
    make_reference = trainer._reference is None
    reference, ref_accepted = [], []
    with trainer.accelerator.autocast():
        for start in range(0, len(jobs), bs):
            batch_items = [it for it, _ in jobs[start:start + bs]]
            seeds = [s for _, s in jobs[start:start + bs]]
            rgb01, alpha01, product01 = trainer.product_tensors(batch_items)
            captions = [it.caption for it in batch_items]
            ads = trainer.paste(trainer.sampler.sample(trainer.prepare_items(batch_items, seeds)), rgb01, alpha01)
            student.append(ads)
            alphas.append(alpha01)
            accepted.append(judge_decide(trainer.judge, ads, product01, captions).float())
            if make_reference:
                with trainer.trainable.teacher.active() as controlnet:
                    ref = trainer.sampler.sample(trainer.prepare_items(batch_items, seeds), controlnet=controlnet)
                ref = trainer.paste(ref, rgb01, alpha01)
                reference.append(ref)
                ref_accepted.append(judge_decide(trainer.judge, ref, product01, captions).float())
    student, alphas, accepted = torch.cat(student), torch.cat(alphas), torch.cat(accepted)
    if make_reference:
        reference = torch.cat(reference)
        trainer._reference = {
            "images": reference.cpu(),
            "available_rate": float(torch.cat(ref_accepted).mean()),
            "diversity": background_diversity(reference, alphas) if len(reference) > 1 else float("nan"),
        }
    ref = trainer._reference
    diversity = background_diversity(student, alphas) if len(student) > 1 else float("nan")
    result = {
        "available_rate": float(accepted.mean()),
        "original_available_rate": ref["available_rate"],
        "diversity": diversity,
        "diversity_ratio": diversity / ref["diversity"] if ref["diversity"] > 0 else float("nan"),
        "distance_to_original": background_distance(student, ref["images"].to(student.device), alphas),
        "images": len(student),
    }
    if vcfg.grid:
        png = image_grid([ref["images"], student.cpu()])
        path = trainer.out_dir / "validation" / f"step_{trainer.step:07d}.png"
        atomic_write_bytes(path, png)
        result["grid"] = str(path.relative_to(trainer.out_dir))
    return result


def validate_and_act(trainer) -> str | None:
    """Validate on the main process, feed the collapse monitor, and act; returns a stop reason or None."""
    from accelerate.utils import broadcast_object_list

    acc = trainer.accelerator
    decision = [None, None]  # (action, step to roll back to)
    if acc.is_main_process:
        result = run_validation(trainer)
        ratio = result["diversity_ratio"]
        collapsed, action = trainer.monitor.update(trainer.step, ratio if ratio == ratio else 1.0,
                                                   result["distance_to_original"])
        result.update(step=trainer.step, collapsed=collapsed)
        trainer.validations.append(result)
        trainer.log.log("validation", trainer.step, {k: v for k, v in result.items() if k != "step"})
        logger.info("validation at step %d: %s", trainer.step, result)
        if collapsed:
            logger.warning("step %d: backgrounds look collapsed (diversity ratio %.3f, distance %.3f); strike %d/%d",
                           trainer.step, ratio, result["distance_to_original"], trainer.monitor.strikes,
                           trainer.cfg.validation.collapse.patience)
        decision = [action, trainer.monitor.last_healthy_step]
    if acc.num_processes > 1:
        broadcast_object_list(decision)
    action, healthy = decision
    if healthy == trainer.step:
        maybe_checkpoint(trainer, force=True)  # a healthy state is the roll-back target: keep it on disk
    if action is None or action == "warn":
        return None
    if action == "rollback" and healthy is not None:
        acc.wait_for_everyone()
        _load(trainer, ckpt.checkpoint_dir(trainer.out_dir, healthy), weights_only=True)
        return f"collapse: rolled back to step {healthy}"
    return "collapse: stopped"


def finish(trainer, stopped: str | None):
    """Export the weights (main process), record why the run stopped, close the logs."""
    from reliable_ad.rfft.trainer import STOPPED, TrainSummary

    acc = trainer.accelerator
    exported = {}
    if stopped is not None and not (trainer.out_dir / STOPPED).is_file():
        weights_step = trainer.monitor.last_healthy_step if "rolled back" in stopped else trainer.step
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            holder = [weights_step]
            broadcast_object_list(holder)
            weights_step = holder[0]
        if weights_step == trainer.step:
            maybe_checkpoint(trainer, force=True)
        if acc.is_main_process:
            atomic_write_json(trainer.out_dir / STOPPED, {"reason": stopped, "step": trainer.step,
                                                           "weights_step": weights_step})
    if acc.is_main_process:
        exported = ckpt.export_trained(trainer.out_dir, trainer.trainable, step=trainer.step, info=trainer.info)
    acc.wait_for_everyone()
    trainer.log.close()
    return TrainSummary(trainer.out_dir, trainer.step, stopped, exported, trainer.failed_products, trainer.validations,
                        main_process=acc.is_main_process)
