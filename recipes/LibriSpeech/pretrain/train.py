#!/usr/bin/env python3
"""BEST-RQ pre-training of a Conformer encoder with any token mixer (PoM,
SummaryMixing, MHA, ...) on LibriSpeech, in the style of SpeechBrain's
``recipes/LibriSpeech/self-supervised-learning/BEST-RQ``.

One GPU (or CPU)::

    python recipes/LibriSpeech/pretrain/train.py hparams/pretrain/pom.yaml \\
        --data_folder=/path/to/LibriSpeech

Several GPUs (SpeechBrain's DDP; max_batch_len is per GPU)::

    torchrun --nproc-per-node=4 recipes/LibriSpeech/pretrain/train.py \\
        hparams/pretrain/pom.yaml --data_folder=/path/to/LibriSpeech

The per-mixer file is merged over ``hparams/pretrain/base.yaml`` and the
command line over both (any key can be overridden). Re-running the same
command resumes from the last checkpoint in ``<output_folder>/save``.

For every batch: 80 log-Mel filterbanks, per-utterance normalisation, a
batch-wide mask (SpeechBrain's ``brq_mask_collate_fn``: spans of 4 frames,
each frame starting one with probability 0.15), targets = random-projection
codes of the clean stacked frames, masked frames replaced by N(0, 0.1) noise,
CNN (4x in time) + encoder + linear head, cross-entropy on masked frames.

Authors
 * pom-speech contributors 2025
"""

import dataclasses
import json
import os
import sys
import time
from functools import partial

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.lobes.models.BESTRQ import brq_mask_collate_fn
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized, run_on_main
from speechbrain.utils.logger import get_logger

from pom.bestrq import masked_stacked_indices, pad_to_multiple
from pom.data.librispeech import prepare_librispeech
from pom.recipe import checks
from pom.recipe.batching import TOLERANCE, describe, global_batch_plan
from pom.recipe.checkpoints import EncoderConfigMismatch, module_fingerprint, statistics_fingerprint
from pom.recipe.checks import ConfigurationError
from pom.recipe.files import copy_file, write_json
from pom.recipe.hparams import load_hparams, resolve_hparams_file, save_run_hparams
from pom.recipe.loading import loader_options, run_device
from pom.recipe.tracking import Trackers, missing_packages

logger = get_logger(__name__)


class BestRQBrain(sb.Brain):
    """Masked prediction of random-projection codes (BEST-RQ)."""

    #: TensorBoard / W&B (pom.recipe.tracking); main() sets those switched on.
    trackers = Trackers()

    def compute_forward(self, batch, stage):
        """Returns the head's logits on the masked frames ``[N, cb_vocab]``
        and their target codes ``[N]``."""
        wavs, wav_lens, mask = (t.to(self.device) for t in batch[:3])
        hp = self.hparams
        # Features, targets and noise in float32, whatever the training precision.
        with torch.autocast(device_type=self.device_type, enabled=False):
            feats = hp.compute_features(wavs.float())
            feats = self.modules.normalize(feats, wav_lens, epoch=hp.epoch_counter.current)
            feats = pad_to_multiple(feats, hp.stack_frames)
            batch_size, n_frames, n_mels = feats.shape
            masked = masked_stacked_indices(mask, hp.stack_frames)
            stacked = feats.reshape(batch_size, n_frames // hp.stack_frames, hp.stack_frames * n_mels)
            targets = self.modules.quantizer(stacked[:, masked])
            noise = torch.normal(
                hp.noise_mean, hp.noise_std, size=(batch_size, mask.numel(), n_mels), device=feats.device
            )
            feats = feats.index_copy(1, mask, noise)

        src = self.modules.CNN(feats)
        dynchunktrain_config = hp.dynchunktrain_config_sampler(stage) if hp.streaming else None
        encoded = self.modules.encoder(src, wav_lens, dynchunktrain_config=dynchunktrain_config)
        logits = self.modules.head(encoded[:, masked])  # the head only sees masked frames
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy on the masked frames; accumulates loss and accuracy."""
        logits, targets = predictions
        loss = F.cross_entropy(logits.float(), targets)
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == targets).sum()
            if torch.isfinite(loss):
                self.stats += torch.stack(
                    [
                        loss.detach().double() * targets.numel(),
                        correct.double(),
                        torch.tensor(float(targets.numel()), device=loss.device).double(),
                    ]
                )
        return loss

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self):
        """Recovers the last checkpoint, then records where training starts."""
        super().on_fit_start()
        self.skipped_steps = 0
        self._check_ranks_identical("start")
        if if_main_process():
            self.hparams.encoder_config.save(os.path.join(self.hparams.save_folder, "encoder_config.json"))
        epoch = self.hparams.epoch_counter.current + 1  # the epoch training goes on with
        if self.optimizer_step > 0:
            logger.info(
                f"resumed from checkpoint: optimizer step {self.optimizer_step}, "
                f"epoch {epoch} after {self.step} batches"
            )
        else:
            logger.info("started from scratch")
        # Where training (re)starts, as numbers (start_step 0: from scratch). SpeechBrain's loggers
        # write on the main process only but must be called on every rank.
        self.hparams.train_steps_logger.log_stats(
            stats_meta={"start_step": self.optimizer_step, "start_epoch": epoch, "start_batch": self.step}
        )
        self._interval_start = time.time()

    def on_stage_start(self, stage, epoch=None):
        """Resets the loss/accuracy accumulators."""
        self.stats = torch.zeros(3, dtype=torch.float64, device=self.device)
        if stage == sb.Stage.TRAIN:
            self.interval_stats = torch.zeros(3, dtype=torch.float64, device=self.device)

    def on_fit_batch_start(self, batch, should_step):
        """Sets the Noam learning rate of the coming optimizer step (before it,
        so that the first step uses the warm-up rate, not the peak)."""
        if should_step:
            self.hparams.noam_annealing(self.optimizer)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Logs every ``log_interval`` optimizer steps; optional batch log."""
        if self.hparams.batch_log and if_main_process():
            with open(self.hparams.batch_log, "a", encoding="utf-8") as f:
                ids = " ".join(batch[3])
                f.write(f"{self.hparams.epoch_counter.current}\t{self.step}\t{self.optimizer_step}\t{ids}\n")
        if should_step and self.optimizer_step % self.hparams.log_interval == 0:
            self._log_interval()

    def _log_interval(self):
        interval = self.stats - self.interval_stats
        self.interval_stats = self.stats.clone()
        if is_distributed_initialized():
            torch.distributed.all_reduce(interval)
        loss_sum, correct, frames = interval.tolist()
        now = time.time()
        stats = {
            "steps": self.optimizer_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": round(loss_sum / max(frames, 1.0), 4),
            "masked_acc": round(correct / max(frames, 1.0), 4),
            "skipped_steps": self.skipped_steps,
            "s_per_step": round((now - self._interval_start) / self.hparams.log_interval, 3),
        }
        self._interval_start = now
        self.hparams.train_steps_logger.log_stats(stats_meta=stats)
        self.trackers.log_stats(stats_meta=stats)

    def check_loss_isfinite(self, loss):
        """SpeechBrain's check (counts and, past ``nonfinite_patience``, stops);
        the step itself is skipped by :meth:`check_gradients`."""
        if not torch.isfinite(loss):
            logger.warning(f"Non-finite loss at optimizer step {self.optimizer_step + 1}; the step is skipped.")
        super().check_loss_isfinite(loss)

    def check_gradients(self):
        """With ``skip_nonfinite_grads``: if any gradient is non-finite, drops
        all of them, so the optimizer leaves every weight (and its state)
        untouched, and counts the skipped step. One device sync per step."""
        grads = [p.grad for p in self.modules.parameters() if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            for param in self.modules.parameters():
                param.grad = None
            self.skipped_steps += 1
            logger.warning(f"Non-finite gradients: optimizer step {self.optimizer_step + 1} skipped.")

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch and saves the end-of-epoch checkpoint."""
        stats = self.stats.clone()
        if is_distributed_initialized() and stage == sb.Stage.TRAIN:
            torch.distributed.all_reduce(stats)
        loss_sum, correct, frames = stats.tolist()
        stage_stats = {
            "loss": round(loss_sum / max(frames, 1.0), 4),
            "masked_acc": round(correct / max(frames, 1.0), 4),
        }
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            if not self.has_valid:
                self._end_of_epoch(epoch, None)
        elif stage == sb.Stage.VALID:
            self._end_of_epoch(epoch, stage_stats)

    def _end_of_epoch(self, epoch, valid_stats):
        meta = {"epoch": epoch, "steps": self.optimizer_step, "lr": self.optimizer.param_groups[0]["lr"]}
        self.hparams.train_stage_logger.log_stats(
            stats_meta=meta, train_stats=self.train_stats, valid_stats=valid_stats
        )
        # "epochs", not "epoch": SpeechBrain's WandBLogger would take an "epoch" as W&B's step,
        # which must keep growing with the step log's.
        self.trackers.log_stats(
            stats_meta={"epochs": epoch, "steps": self.optimizer_step},
            train_stats=self.train_stats,
            valid_stats=valid_stats,
        )
        self._check_ranks_identical(f"epoch {epoch}")
        if valid_stats:
            meta.update({f"valid_{k}": v for k, v in valid_stats.items()})
        self.checkpointer.save_and_keep_only(
            end_of_epoch=True, num_to_keep=self.hparams.num_end_of_epoch_ckpts, meta=meta
        )

    def _should_save_intra_epoch_ckpt(self, last_ckpt_time, steps_since_ckpt):
        """SpeechBrain's decision, but only right after an optimizer step, so
        that no partly accumulated gradient is lost by a restart."""
        decision = super()._should_save_intra_epoch_ckpt(last_ckpt_time, steps_since_ckpt)
        return decision and self.step % self.grad_accumulation_factor == 0

    def _check_ranks_identical(self, where):
        """Under DDP, checks that every rank holds bitwise the same weights,
        quantizer and normalisation statistics; records the fingerprints in
        ``ddp_check.jsonl``."""
        if not is_distributed_initialized():
            return
        mine = {
            "model": module_fingerprint(self.modules.CNN, self.modules.encoder, self.modules.head),
            "quantizer": module_fingerprint(self.modules.quantizer),
            "normalize": statistics_fingerprint(self.modules.normalize),
        }
        every = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(every, mine)
        if if_main_process():
            with open(os.path.join(self.hparams.output_folder, "ddp_check.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps({"where": where, "steps": self.optimizer_step, "ranks": every}) + "\n")
        if any(fp != every[0] for fp in every):
            raise RuntimeError(f"DDP ranks disagree at {where}: {every}")


def dataio_prepare(hparams, device="cpu"):
    """Train dataset, train/valid loader options (dynamic batches, BEST-RQ masks;
    the YAML's loader options that apply on ``device``, see :mod:`pom.recipe.loading`)."""
    # Audio paths of the CSVs may start with $data_root (SpeechBrain's convention): the data folder.
    replacements = {"data_root": hparams["data_folder"]}
    train_data = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path=hparams["train_csv"], replacements=replacements)
    train_data = train_data.filtered_sorted(
        sort_key="duration",
        key_max_value={"duration": hparams["avoid_if_longer_than"]},
        key_min_value={"duration": hparams["avoid_if_shorter_than"]},
    )
    datasets = [train_data]
    valid_data = None
    if hparams["valid_csv"]:
        valid_data = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=hparams["valid_csv"], replacements=replacements
        )
        valid_data = valid_data.filtered_sorted(sort_key="duration")
        datasets.append(valid_data)
    if len(train_data) == 0:
        raise ValueError(f"No training utterance left in {hparams['train_csv']} after the duration filters")

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig"])

    hop = hparams["sample_rate"] * hparams["hop_length"] // 1000

    def fbank_frames(num_samples):
        """Frames of the (centred) Fbank for ``num_samples`` samples."""
        return (num_samples // hop + 1).to(torch.long)

    mask_collate = partial(
        brq_mask_collate_fn,
        get_out_len_fn=fbank_frames,
        mask_prob=hparams["mask_prob"],
        mask_length=hparams["mask_length"],
        n_mels=hparams["n_mels"],
    )

    def collate(samples):
        """(wavs, relative lengths, masked frame indices, ids)."""
        return (*mask_collate(samples), [s["id"] for s in samples])

    train_sampler = DynamicBatchSampler(
        train_data,
        max_batch_length=hparams["max_batch_len"],
        num_buckets=hparams["train_num_buckets"],
        length_func=lambda x: x["duration"],
        shuffle=True,
        batch_ordering="random",
        seed=hparams["seed"],
    )
    train_loader_kwargs = loader_options(
        dict(hparams["train_dataloader_options"], batch_sampler=train_sampler, collate_fn=collate), device
    )
    valid_loader_kwargs = loader_options(dict(hparams["valid_dataloader_options"], collate_fn=collate), device)
    logger.info(
        f"{len(train_data)} training utterances in {len(train_sampler)} dynamic batches of "
        f"<= {hparams['max_batch_len']} s ({hparams['train_num_buckets']} buckets)"
    )
    return train_data, valid_data, train_sampler, train_loader_kwargs, valid_loader_kwargs


def check_hparams(hparams, run_opts):
    """Every problem of the settings, one line each (an empty list: the run can
    start): types and ranges of the options this recipe reads, the data folder,
    and combinations that cannot work. On a CPU, the YAML's fp16 becomes fp32
    (with a printed warning)."""
    problems = [
        *checks.numbers(hparams, "max_batch_len", "lr", "avoid_if_longer_than"),
        *checks.numbers(hparams, "global_batch_seconds", optional=True),
        *checks.numbers(hparams, "weight_decay", "avoid_if_shorter_than", "noise_std", strict=False),
        *checks.numbers(hparams, "mask_prob", maximum=1),
        *checks.numbers(hparams, "noise_mean", minimum=None),
        *checks.integers(
            hparams,
            "train_num_buckets",
            "valid_batch_size",
            "grad_accumulation_factor",
            "log_interval",
            "warmup_steps",
            "mask_length",
            "stack_frames",
            "num_end_of_epoch_ckpts",
        ),
        *checks.integers(hparams, "num_workers", "seed", minimum=0),
        *checks.integers(hparams, "prefetch_factor", optional=True),
        *checks.booleans(hparams, "skip_prep", "causal", "streaming", "use_tensorboard", "use_wandb"),
        *checks.booleans(hparams, "pin_memory", "persistent_workers"),
        *checks.fp16_on_cpu(hparams, run_opts),
        *missing_packages(hparams),
    ]
    mask_length, stack_frames = hparams["mask_length"], hparams["stack_frames"]
    if (
        isinstance(mask_length, int)
        and isinstance(stack_frames, int)
        and stack_frames > 0
        and mask_length % stack_frames
    ):
        problems.append(f"mask_length ({mask_length}) must be a multiple of stack_frames ({stack_frames})")
    if hparams.get("global_batch_seconds") and "grad_accumulation_factor" in run_opts.overridden_args:
        problems.append(
            "grad_accumulation_factor is derived from global_batch_seconds: give one of them "
            "(--global_batch_seconds=null to set the accumulation by hand)"
        )
    if not os.path.isdir(str(hparams["data_folder"])) and not hparams["skip_prep"]:
        problems.append(
            f"data_folder {hparams['data_folder']!r} does not exist: pass --data_folder=/path/to/LibriSpeech "
            "(the folder holding train-clean-100, dev-clean, ...)"
        )
    return problems


def world_size():
    """Number of DDP processes (1 without DDP)."""
    return torch.distributed.get_world_size() if is_distributed_initialized() else 1


def plan_global_batch(hparams):
    """With ``global_batch_seconds``, derives the gradient accumulation and the
    per-GPU ``max_batch_len`` (at most the YAML's) from the number of GPUs, so
    that every optimizer step sees the same audio on 1, 2 or 8 GPUs; sets them
    in ``hparams`` and returns the plan (None when the option is null)."""
    target = hparams.get("global_batch_seconds")
    if not target:
        return None
    plan = global_batch_plan(float(target), float(hparams["max_batch_len"]), world_size())
    hparams["grad_accumulation_factor"] = plan.grad_accumulation_factor
    hparams["max_batch_len"] = plan.per_device
    return plan


def record_global_batch(hparams, plan, train_sampler):
    """Logs the effective batch of one optimizer step and writes it to
    ``<output_folder>/global_batch.json``."""
    lengths = list(train_sampler._ex_lengths.values())
    fill = sum(lengths) / max(len(train_sampler), 1)  # mean seconds per dynamic batch
    if plan is None:
        plan = global_batch_plan(
            hparams["max_batch_len"] * world_size() * hparams["grad_accumulation_factor"],
            hparams["max_batch_len"],
            world_size(),
        )
    logger.info("Effective batch: " + describe(plan, measured_per_device=fill))
    if plan.off_target > TOLERANCE:
        logger.warning(
            f"The global batch ({plan.global_batch:.0f} s) is {100 * plan.off_target:.0f} % away "
            f"from global_batch_seconds ({plan.target:.0f} s)"
        )
    if if_main_process():
        record = dict(
            plan.as_dict(),
            mean_seconds_per_device_batch=round(fill, 2),
            mean_seconds_per_step=round(fill * plan.world_size * plan.grad_accumulation_factor, 1),
        )
        write_json(os.path.join(hparams["output_folder"], "global_batch.json"), record)


def export_pretrained(hparams, checkpointer):
    """Copies the last checkpoint's encoder, normaliser and configuration to
    ``<output_folder>/pretrained/`` (the fine-tuning recipe's input)."""
    ckpt = checkpointer.find_checkpoint()
    if ckpt is None:
        return
    out = os.path.join(hparams["output_folder"], "pretrained")
    os.makedirs(out, exist_ok=True)
    for name in ("model", "normalize", "quantizer", "head"):
        copy_file(ckpt.paramfiles[name], os.path.join(out, f"{name}.ckpt"))
    copy_file(ckpt.paramfiles["encoder_config"], os.path.join(out, "encoder_config.json"))
    write_json(
        os.path.join(out, "checkpoint.json"),
        {"checkpoint": str(ckpt.path), **{k: v for k, v in ckpt.meta.items() if k != "unixtime"}},
    )
    logger.info(f"Pre-trained encoder exported to {out} (from {ckpt.path})")


def main(argv):
    """Pre-trains, or resumes, as the command line says. A run that cannot go on
    raises :class:`ConfigurationError` (one line: see the end of this file)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if isinstance(run_opts.optimizer_step_limit, str):  # SpeechBrain 1.1 parses it as a string
        if not run_opts.optimizer_step_limit.isdigit():
            raise ConfigurationError(
                f"optimizer_step_limit must be a positive integer, got {run_opts.optimizer_step_limit!r}"
            )
        run_opts = dataclasses.replace(run_opts, optimizer_step_limit=int(run_opts.optimizer_step_limit))
    sb.utils.distributed.ddp_init_group(run_opts)

    try:
        hparams = load_hparams(hparams_file, overrides)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise ConfigurationError(f"in the configuration ({hparams_file} and command line): {err}") from None
    hparams.setdefault("batch_log", None)
    problems = check_hparams(hparams, run_opts)
    if problems:
        raise ConfigurationError("; ".join(problems))
    batch_plan = plan_global_batch(hparams)

    # ckpt_interval_steps given on the command line replaces the default time interval.
    if "ckpt_interval_steps" in run_opts.overridden_args and "ckpt_interval_minutes" not in run_opts.overridden_args:
        hparams["ckpt_interval_minutes"] = 0

    # SpeechBrain's experiment folder (log, environment, this script); hyperparams.yaml is written by
    # save_run_hparams: the base file with the experiment file and command line merged, references
    # resolved, loadable again (load_run_hparams).
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"])
    if if_main_process():
        save_run_hparams(hparams["output_folder"], *resolve_hparams_file(hparams_file, overrides))

    try:
        run_on_main(
            prepare_librispeech,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["output_folder"],
                "tr_splits": hparams["train_splits"],
                "dev_splits": hparams["dev_splits"],
                "te_splits": hparams["test_splits"],
                "merge_lst": hparams["train_splits"],
                "merge_name": "train.csv",
                "skip_prep": hparams["skip_prep"],
            },
        )
        train_data, valid_data, train_sampler, train_kwargs, valid_kwargs = dataio_prepare(
            hparams, run_device(hparams, run_opts)
        )
    except (ValueError, FileNotFoundError) as err:
        raise ConfigurationError(f"data preparation failed: {err}") from None
    record_global_batch(hparams, batch_plan, train_sampler)

    brain = BestRQBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.has_valid = valid_data is not None
    brain.trackers = Trackers.from_hparams(hparams)
    brain.train_sampler = train_sampler  # so that fit() calls set_epoch (DDP replaces it by its wrapper)
    try:
        brain.fit(
            brain.hparams.epoch_counter,
            train_data,
            valid_data,
            train_loader_kwargs=train_kwargs,
            valid_loader_kwargs=valid_kwargs,
        )
    except EncoderConfigMismatch as err:  # resuming into another architecture
        raise ConfigurationError(f"cannot resume from {hparams['save_folder']}: {err}") from None
    finally:
        brain.trackers.close()
    if if_main_process():
        export_pretrained(hparams, brain.checkpointer)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigurationError as err:  # the one way out of a run that cannot go on: one line, no traceback
        sys.exit(f"Error: {err}")
