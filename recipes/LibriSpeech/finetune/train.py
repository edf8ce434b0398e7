#!/usr/bin/env python3
"""CTC fine-tuning of a BEST-RQ pre-trained Conformer (PoM, SummaryMixing,
MHA, ...) on LibriSpeech train-clean-100, in the style of SpeechBrain's
``recipes/LibriSpeech/ASR/CTC/train_with_bestrq.py``.

One GPU (or CPU)::

    python recipes/LibriSpeech/finetune/train.py hparams/finetune/pom.yaml \\
        --data_folder=/path/to/LibriSpeech \\
        --pretrained_path=results/pretrain/pom/1000

Several GPUs (SpeechBrain's DDP; ``global_batch_size`` utterances per
optimizer step whatever the number of GPUs, at most ``batch_size`` per GPU)::

    torchrun --nproc-per-node=2 recipes/LibriSpeech/finetune/train.py \\
        hparams/finetune/pom.yaml --data_folder=... --pretrained_path=...

``--pretrained_path`` is a pre-training output folder (its latest complete
checkpoint), one ``save/CKPT+*`` folder, the exported ``pretrained/`` folder,
a SpeechBrain BEST-RQ run or checkpoint, a checkpoint of the PoM authors
(both converted once into ``<output_folder>/imported_encoder``), or ``none``
to start from a random encoder (a supervised baseline). The checkpoint's
encoder configuration must match the YAML (mixer, sizes, features,
normalisation), else the recipe stops with a one-line message.

The model: fbank -> normalisation (global statistics loaded from the
pre-training and kept fixed, or per utterance) -> CNN front end -> encoder
(both pre-trained) -> 3-layer DNN -> linear CTC layer (characters, 29
outputs, or SentencePiece units with ``--token_type=bpe``). The encoder and
the head have their own AdamW and NewBob schedules (5e-5 and 3e-4).
Waveforms are augmented (speed, frequency and chunk dropping) in training.
Validation decodes greedily; the test sets (``test_csv``: dev-clean,
dev-other, test-clean, test-other) with CTC beam search (optionally with a
KenLM n-gram), from the best checkpoint or the average of several
(``avg_checkpoints``), writing ``wer_<test set>.txt`` and ``results.json``
(``python -m pom.results`` prints the table).

Any corpus: ``--skip_prep=True --train_csv=... --valid_csv=...
--test_csv=[...]`` (SpeechBrain CSVs with ``ID,duration,wav,wrd``); the
character vocabulary is that of the training transcripts
(``save/label_encoder.txt``), and characters of the validation and test
transcripts outside it are counted and reported.

Authors
 * pom-speech contributors 2025
"""

import csv
import os
import sys
import time

import speechbrain as sb
import torch
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.decoders.ctc import CTCBeamSearcher
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized, run_on_main
from speechbrain.utils.logger import get_logger

from pom.convert import find_or_convert
from pom.data.librispeech import prepare_librispeech
from pom.parameters import count_parameters
from pom.recipe import checks
from pom.recipe.batching import TOLERANCE, describe, global_batch_plan
from pom.recipe.checkpoints import (
    AVERAGE_SELECTIONS,
    final_checkpoint,
    remove_averaged_checkpoint,
    save_averaged_checkpoint,
    select_checkpoints,
)
from pom.recipe.checks import ConfigurationError
from pom.recipe.files import atomic_write, write_json
from pom.recipe.hparams import load_hparams, resolve_hparams_file, save_run_hparams
from pom.recipe.loading import loader_options, run_device
from pom.recipe.pretrained import PretrainedMismatchError, check_pretrained_config, load_pretrained
from pom.recipe.tokens import TOKEN_TYPES, CTCTokens
from pom.recipe.tracking import Trackers, missing_packages

logger = get_logger(__name__)


class ASR(sb.Brain):
    """Pre-trained encoder + CTC head."""

    #: TensorBoard / W&B (pom.recipe.tracking); main() sets those switched on.
    trackers = Trackers()

    def compute_forward(self, batch, stage):
        """Waveforms -> CTC log-probabilities ``[B, T, outputs]``."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
        # Features in float32 whatever the training precision (as in pre-training).
        with torch.autocast(device_type=self.device_type, enabled=False):
            feats = self.hparams.compute_features(wavs.float())
            feats = self.modules.normalize(feats, wav_lens, epoch=self.hparams.epoch_counter.current)
        with torch.set_grad_enabled(stage == sb.Stage.TRAIN and not self.hparams.freeze_encoder):
            dynchunktrain_config = self.hparams.dynchunktrain_config_sampler(stage) if self.hparams.streaming else None
            encoded = self.modules.encoder(self.modules.CNN(feats), wav_lens, dynchunktrain_config=dynchunktrain_config)
        logits = self.modules.ctc_lin(self.modules.back_end_ffn(encoded))
        return self.hparams.log_softmax(logits), wav_lens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; word and character error rates outside training."""
        p_ctc, wav_lens = predictions
        tokens, tokens_lens = batch.tokens
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            tokens = self.hparams.wav_augment.replicate_labels(tokens)
            tokens_lens = self.hparams.wav_augment.replicate_labels(tokens_lens)
        loss = self.hparams.ctc_cost(p_ctc.float(), tokens, wav_lens, tokens_lens)

        if stage != sb.Stage.TRAIN:
            if stage == sb.Stage.TEST and self.test_searcher is not None:
                hyps = [h[0].text for h in self.test_searcher(p_ctc.float(), wav_lens)]
            else:
                sequences = sb.decoders.ctc_greedy_decode(p_ctc, wav_lens, blank_id=self.hparams.blank_index)
                hyps = [self.tokens.decode(seq) for seq in sequences]
            predicted = [hyp.split() for hyp in hyps]
            targets = [wrd.split() for wrd in batch.wrd]
            self.wer_metric.append(batch.id, predicted, targets)
            self.cer_metric.append(batch.id, predicted, targets)
        return loss

    def init_optimizers(self):
        """One AdamW for the head, one (smaller lr) for the CNN + encoder."""
        self.model_optimizer = self.hparams.model_opt_class(self.hparams.model.parameters())
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("model_opt", self.model_optimizer)
        if not self.hparams.freeze_encoder:
            self.encoder_optimizer = self.hparams.encoder_opt_class(self.hparams.pt_model.parameters())
            self.optimizers_dict["encoder_optimizer"] = self.encoder_optimizer
            if self.checkpointer is not None:
                self.checkpointer.add_recoverable("encoder_opt", self.encoder_optimizer)

    def on_stage_start(self, stage, epoch=None):
        """New error-rate accumulators for validation and test."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()
        self.stage_start = time.time()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """NewBob on the validation loss, logging, best-WER checkpoints; test results."""
        stage_stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stage_stats
            return
        stage_stats["CER"] = self.cer_metric.summarize("error_rate")
        stage_stats["WER"] = self.wer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing_model(stage_stats["loss"])
            sb.nnet.schedulers.update_learning_rate(self.model_optimizer, new_lr)
            meta = {"epoch": epoch, "lr": old_lr}
            if not self.hparams.freeze_encoder:
                old_lr_enc, new_lr_enc = self.hparams.lr_annealing_encoder(stage_stats["loss"])
                sb.nnet.schedulers.update_learning_rate(self.encoder_optimizer, new_lr_enc)
                meta["lr_encoder"] = old_lr_enc
            meta["minutes"] = round((time.time() - self.fit_start) / 60.0, 2)
            self.hparams.train_logger.log_stats(stats_meta=meta, train_stats=self.train_stats, valid_stats=stage_stats)
            self.trackers.log_stats(stats_meta=meta, train_stats=self.train_stats, valid_stats=stage_stats)
            # The best checkpoints by best_metric and the most recent ones (to resume), as many as are averaged.
            self.checkpointer.save_and_keep_only(
                meta={"WER": stage_stats["WER"], "CER": stage_stats["CER"], "loss": stage_loss},
                min_keys=[self.hparams.best_metric],
                num_to_keep=max(1, self.hparams.avg_checkpoints),
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"split": self.test_split, "epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stage_stats,
            )
            self.trackers.log_stats(
                stats_meta={}, test_stats={f"{key}_{self.test_split}": value for key, value in stage_stats.items()}
            )
            if if_main_process():
                folder = self.hparams.output_folder
                tag = "_lm" if self.hparams.kenlm_model_path and self.test_searcher is not None else ""
                with atomic_write(os.path.join(folder, f"wer_{self.test_split}{tag}.txt")) as w:
                    self.wer_metric.write_stats(w)
                with atomic_write(os.path.join(folder, f"cer_{self.test_split}{tag}.txt")) as w:
                    self.cer_metric.write_stats(w)
                self.results["splits"][self.test_split] = {
                    "WER": round(stage_stats["WER"], 2),
                    "CER": round(stage_stats["CER"], 2),
                    "loss": round(float(stage_loss), 4),
                    "utterances": len(self.wer_metric.scores),
                    "unknown_characters": dict(self.unknown_characters.get(self.test_split, {})),
                }
                write_json(self.hparams.results_file, self.results)

    def on_fit_start(self):
        """Records when fitting started (epoch times in the log)."""
        self.fit_start = time.time()
        super().on_fit_start()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Loads the checkpoint the run tests with: ``final_checkpoint``, the
        averaged one when the run averages checkpoints, else the best by
        ``min_key`` (SpeechBrain's choice)."""
        del max_key
        self.tested_checkpoint = final_checkpoint(self.hparams.save_folder, min_key)
        if self.tested_checkpoint is not None:
            self.checkpointer.load_checkpoint(self.tested_checkpoint)
        else:
            logger.warning(f"No checkpoint with a validation {min_key} in {self.hparams.save_folder}: testing as is")


def named_test_sets(hparams):
    """``{name: CSV path}`` of ``test_csv`` (one path or a list), each named
    after its file (``.../test-clean.csv`` -> ``test-clean``); with
    ``test_csv: null``, the CSVs of ``test_splits`` in ``output_folder``."""
    paths = hparams["test_csv"]
    if paths is None:
        paths = [os.path.join(hparams["output_folder"], f"{split}.csv") for split in hparams["test_splits"]]
    paths = [paths] if isinstance(paths, str) else list(paths)
    named = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(str(path)))[0]
        if name in named:
            raise ValueError(f"test_csv: {named[name]} and {path} have the same name {name!r}: rename one")
        named[name] = str(path)
    return named


def read_transcripts(csv_path):
    """The ``wrd`` column of a SpeechBrain CSV."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [row.get("wrd") or "" for row in csv.DictReader(f)]


def report_unknown_characters(name, counts):
    """One log line for the characters of a validation or test set that no
    output can produce (they stay in the references, so they count as errors)."""
    if counts:
        shown = ", ".join(f"{char!r} x{n}" for char, n in counts.most_common(10))
        logger.warning(
            f"{name}: {sum(counts.values())} character(s) of the transcripts are not in the vocabulary of the "
            f"training transcripts ({shown}{', ...' if len(counts) > 10 else ''}): no output can produce them, "
            "so they count as errors (and are left out of the CTC targets)"
        )


def dataio_prepare(hparams, tokens, device="cpu"):
    """Train/valid/test datasets: audio and CTC targets; the train, valid and test
    loader options that apply on ``device`` (see :mod:`pom.recipe.loading`)."""

    def read(csv_path):
        # Audio paths may start with $data_root (SpeechBrain's convention): the data folder.
        return sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path, replacements={"data_root": hparams["data_folder"]}
        )

    train_data = read(hparams["train_csv"])
    limits = {}
    if hparams["avoid_if_longer_than"]:
        limits["key_max_value"] = {"duration": hparams["avoid_if_longer_than"]}
    if hparams["avoid_if_shorter_than"]:
        limits["key_min_value"] = {"duration": hparams["avoid_if_shorter_than"]}
    train_loader_kwargs = dict(hparams["train_dataloader_opts"])
    if hparams["sorting"] in ("ascending", "descending"):
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=hparams["sorting"] == "descending", **limits
        )
        train_loader_kwargs["shuffle"] = False  # sorted batches, as in SpeechBrain's recipe
    else:  # random
        if limits:
            train_data = train_data.filtered_sorted(**limits)
        train_loader_kwargs["shuffle"] = True
    if len(train_data) == 0:
        raise ValueError(f"no training utterance in {hparams['train_csv']}")

    valid_data = read(hparams["valid_csv"]).filtered_sorted(sort_key="duration")
    test_datasets = {
        name: read(path).filtered_sorted(sort_key="duration") for name, path in named_test_sets(hparams).items()
    }
    datasets = [train_data, valid_data, *test_datasets.values()]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return sb.dataio.dataio.read_audio(wav)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(tokens.encode(wrd))

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])

    if hparams["max_batch_len"]:  # dynamic batches: the sampler replaces batch_size and shuffle
        for key in ("batch_size", "shuffle"):
            train_loader_kwargs.pop(key, None)
        train_loader_kwargs["batch_sampler"] = DynamicBatchSampler(
            train_data,
            max_batch_length=hparams["max_batch_len"],
            num_buckets=hparams["num_buckets"],
            length_func=lambda x: x["duration"],
            shuffle=True,
            batch_ordering="random",
            seed=hparams["seed"],
        )
    loaders = [train_loader_kwargs, hparams["valid_dataloader_opts"], hparams["test_dataloader_opts"]]
    return train_data, valid_data, test_datasets, *(loader_options(opts, device) for opts in loaders)


def build_tokens(hparams):
    """Character label encoder of the train transcripts (kept in
    ``save/label_encoder.txt``: a resumed run keeps its labels), or
    SentencePiece trained on them."""
    if hparams["token_type"] == "char":
        path = os.path.join(hparams["save_folder"], "label_encoder.txt")
        run_on_main(CTCTokens.characters, kwargs={"path": path, "train_csv": hparams["train_csv"]})
        return CTCTokens.characters(path)
    return CTCTokens.sentencepiece(
        model_dir=os.path.join(hparams["save_folder"], "tokenizer"),
        vocab_size=hparams["bpe_vocab_size"],
        train_csv=hparams["train_csv"],
        model_type=hparams["token_type"],
    )


def check_hparams(hparams, run_opts):
    """Every problem of the settings, one line each (an empty list: the run can
    start): types and ranges of the options this recipe reads, the data folder,
    the LM, and combinations that cannot work. On a CPU, the YAML's fp16
    becomes fp32 (with a printed warning)."""
    problems = [
        *checks.numbers(hparams, "lr", "lr_encoder"),
        *checks.numbers(hparams, "weight_decay", strict=False),
        *checks.numbers(hparams, "max_batch_len", "avoid_if_longer_than", optional=True),
        *checks.numbers(hparams, "avoid_if_shorter_than", strict=False, optional=True),
        *checks.numbers(hparams, "lm_alpha", "lm_beta", minimum=None),
        *checks.integers(hparams, "global_batch_size", optional=True),
        *checks.integers(
            hparams,
            "batch_size",
            "grad_accumulation_factor",
            "num_buckets",
            "valid_batch_size",
            "test_batch_size",
            "beam_size",
        ),
        *checks.integers(hparams, "num_workers", "seed", minimum=0),
        *checks.integers(hparams, "prefetch_factor", optional=True),
        *checks.integers(hparams, "avg_checkpoints"),
        *checks.one_of(hparams, "token_type", TOKEN_TYPES),
        *checks.one_of(hparams, "best_metric", ("WER", "CER", "loss")),
        *checks.one_of(hparams, "avg_checkpoints_select", AVERAGE_SELECTIONS),
        *checks.one_of(hparams, "test_decoding", ("beam", "greedy")),
        *checks.one_of(hparams, "sorting", ("ascending", "descending", "random")),
        *checks.booleans(
            hparams, "augment", "freeze_encoder", "skip_prep", "causal", "streaming", "use_tensorboard", "use_wandb"
        ),
        *checks.booleans(hparams, "pin_memory", "persistent_workers"),
        *checks.fp16_on_cpu(hparams, run_opts),
        *missing_packages(hparams),
    ]
    lm_problem = checks.check_lm_decoding(hparams["kenlm_model_path"], hparams["test_decoding"])
    if lm_problem:
        problems.append(lm_problem)
    fixed_batches = hparams.get("global_batch_size") and not hparams["max_batch_len"]
    if fixed_batches and "grad_accumulation_factor" in run_opts.overridden_args:
        problems.append(
            "grad_accumulation_factor is derived from global_batch_size: give one of them "
            "(--global_batch_size=null to set the accumulation by hand)"
        )
    if not os.path.isdir(str(hparams["data_folder"])) and not hparams["skip_prep"]:
        problems.append(
            f"data_folder {hparams['data_folder']!r} does not exist: pass --data_folder=/path/to/LibriSpeech "
            "(the folder holding train-clean-100, dev-clean, ...)"
        )
    try:
        tests = named_test_sets(hparams)
    except ValueError as err:
        problems.append(str(err))
        tests = {}
    if hparams["skip_prep"]:  # the user's own CSVs: they must be there
        csvs = {"train_csv": hparams["train_csv"], "valid_csv": hparams["valid_csv"]}
        csvs.update({f"test_csv ({name})": path for name, path in tests.items()})
        for key, path in csvs.items():
            if not os.path.isfile(str(path)):
                problems.append(f"{key} {path} does not exist (--skip_prep=True: give your own CSV files)")
    return problems


def plan_global_batch(hparams):
    """With ``global_batch_size`` and fixed-size batches, derives the per-GPU
    batch (at most ``batch_size``) and the gradient accumulation from the
    number of GPUs, so that 1, 2 or 8 GPUs take the same optimizer steps; sets
    them in ``hparams`` and logs the effective batch."""
    target = hparams.get("global_batch_size")
    world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
    if not target or hparams["max_batch_len"]:
        plan = global_batch_plan(
            hparams["batch_size"] * world * hparams["grad_accumulation_factor"],
            hparams["batch_size"],
            world,
            integer=True,
        )
        if hparams["max_batch_len"]:
            logger.info(
                f"Dynamic batches of at most {hparams['max_batch_len']} s per GPU x {world} GPU(s) x "
                f"{hparams['grad_accumulation_factor']} accumulated step(s)"
            )
            return None
    else:
        plan = global_batch_plan(int(target), int(hparams["batch_size"]), world, integer=True)
        hparams["grad_accumulation_factor"] = plan.grad_accumulation_factor
        hparams["train_dataloader_opts"]["batch_size"] = plan.per_device
        if plan.off_target > TOLERANCE:
            logger.warning(f"global_batch_size {target} cannot be split over {world} GPUs: {plan.global_batch} used")
    logger.info("Effective batch: " + describe(plan, unit="utterances"))
    return plan


def fix_normalizer(hparams, found):
    """Global normalisation: the statistics come with the pre-trained encoder
    and stay fixed (SpeechBrain 1.1 would otherwise keep updating them)."""
    if hparams["norm_type"] != "global" or found is None:
        return
    if found["normalize"] is None:
        raise PretrainedMismatchError(
            f"the pre-trained encoder in {found['dir']} has no normalize.ckpt, but norm_type is global: "
            "use the pre-training's normalisation (--norm_type=sentence if it had none)"
        )
    hparams["normalize"].update_until_epoch = 0  # epoch >= 0: never updated


def average_for_test(hparams):
    """With ``avg_checkpoints`` > 1, saves the average of the selected
    validated checkpoints as ``save/averaged/`` (what :func:`final_checkpoint`
    and so the test load); otherwise removes an earlier averaged checkpoint, so
    that the best one is tested. Main process (``run_on_main``)."""
    wanted, save_folder = hparams["avg_checkpoints"], hparams["save_folder"]
    if wanted <= 1:
        remove_averaged_checkpoint(save_folder)
        return
    select, metric = hparams["avg_checkpoints_select"], hparams["best_metric"]
    chosen = select_checkpoints(hparams["checkpointer"], wanted, metric, select)
    if not chosen:
        logger.warning(f"avg_checkpoints: {wanted}, but {save_folder} has no validated checkpoint to average")
        remove_averaged_checkpoint(save_folder)
        return
    if len(chosen) < wanted:
        logger.warning(f"avg_checkpoints: {wanted}, but only {len(chosen)} validated checkpoint(s): averaging those")
    names = [os.path.basename(str(c.path)) for c in chosen]
    saved = save_averaged_checkpoint(
        hparams["checkpointer"],
        chosen,
        average=("pt_model", "model"),
        meta={"averaged": names, "select": select, "best_metric": metric, "values": [c.meta[metric] for c in chosen]},
    )
    logger.info(f"Averaged {len(chosen)} checkpoint(s) ({select} by {metric}: {', '.join(names)}) into {saved.path}")


def load_configuration(hparams_file, overrides):
    """``load_hparams`` with its errors as one :class:`ConfigurationError` line."""
    try:
        return load_hparams(hparams_file, overrides)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise ConfigurationError(f"in the configuration ({hparams_file} and command line): {err}") from None


def main(argv):
    """Fine-tunes (or, after training, only tests) as the command line says. A
    run that cannot go on raises :class:`ConfigurationError` (one line: see the
    end of this file)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_configuration(hparams_file, overrides)
    problems = check_hparams(hparams, run_opts)
    if problems:
        raise ConfigurationError("; ".join(problems))
    try:  # a foreign checkpoint is converted once (main process), then found by every rank
        locate = {
            "path": hparams["pretrained_path"],
            "import_dir": os.path.join(hparams["output_folder"], "imported_encoder"),
        }
        run_on_main(find_or_convert, kwargs=locate)
        found = find_or_convert(**locate)
        if found is not None:
            check_pretrained_config(found, hparams["encoder_config"], hparams_file)
        fix_normalizer(hparams, found)
    except PretrainedMismatchError as err:
        raise ConfigurationError(f"{err}. Fine-tune with the pre-training's mixer and sizes.") from None
    except (FileNotFoundError, ValueError) as err:
        raise ConfigurationError(str(err)) from None

    # SpeechBrain's experiment folder (log, environment, this script); hyperparams.yaml is written
    # below by save_run_hparams, once the size of the CTC output layer is known.
    sb.create_experiment_directory(experiment_directory=hparams["output_folder"])
    splits = list(dict.fromkeys(list(hparams["dev_splits"]) + list(hparams["test_splits"])))
    try:
        run_on_main(
            prepare_librispeech,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["output_folder"],
                "tr_splits": hparams["train_splits"],
                "dev_splits": splits,
                "merge_lst": hparams["train_splits"],
                "merge_name": "train.csv",
                "skip_prep": hparams["skip_prep"],
            },
        )
        tokens = build_tokens(hparams)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigurationError(f"data preparation failed: {err}") from None

    # The CTC layer has one output per label of the vocabulary of the training transcripts (29 on
    # LibriSpeech, the YAML's default): another corpus builds the model again with its size.
    base_file, merged_overrides = resolve_hparams_file(hparams_file, overrides)
    if len(tokens) != hparams["output_neurons"]:
        logger.info(
            f"{len(tokens)} CTC outputs, one per label of the training transcripts "
            f"(output_neurons was {hparams['output_neurons']})"
        )
        merged_overrides["output_neurons"] = len(tokens)
        precision = hparams["precision"]  # as check_hparams left it (fp32 for fp16 on a CPU)
        hparams = load_configuration(base_file, merged_overrides)
        hparams["precision"] = precision
        fix_normalizer(hparams, found)
    if if_main_process():
        save_run_hparams(hparams["output_folder"], base_file, merged_overrides)
    batch_plan = plan_global_batch(hparams)

    try:
        train_data, valid_data, test_datasets, train_loader_kwargs, valid_loader_kwargs, test_loader_kwargs = (
            dataio_prepare(hparams, tokens, run_device(hparams, run_opts))
        )
        unknown = {
            name: tokens.unknown_characters(read_transcripts(path)) for name, path in named_test_sets(hparams).items()
        }
        valid_unknown = tokens.unknown_characters(read_transcripts(hparams["valid_csv"]))
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise ConfigurationError(f"data preparation failed: {err}") from None
    report_unknown_characters(f"valid_csv {hparams['valid_csv']}", valid_unknown)

    resuming = hparams["checkpointer"].find_checkpoint() is not None
    if found is not None and not resuming:
        load_kwargs = {
            "found": found,
            "pt_model": hparams["pt_model"],
            "normalize": hparams["normalize"],
            "encoder_config": hparams["encoder_config"],
            "collect_in": os.path.join(hparams["save_folder"], "pretrained"),
            "hparams_name": hparams_file,
        }
        try:  # the main process links the files and loads them, then the other ranks load them
            run_on_main(load_pretrained, kwargs=load_kwargs, post_func=load_pretrained, post_kwargs=load_kwargs)
        except PretrainedMismatchError as err:
            raise ConfigurationError(f"{err}. Fine-tune with the pre-training's mixer and sizes.") from None
    elif found is None:
        logger.info("No pre-trained encoder (pretrained_path: none): the encoder starts from random weights")

    asr_brain = ASR(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr_brain.tokens = tokens
    asr_brain.test_searcher = None
    asr_brain.unknown_characters = unknown
    asr_brain.trackers = Trackers.from_hparams(hparams)
    n_encoder = count_parameters(hparams["pt_model"])
    n_head = count_parameters(hparams["model"])
    logger.info(f"Parameters: CNN + encoder {n_encoder / 1e6:.2f} M, CTC head {n_head / 1e6:.2f} M")

    try:
        asr_brain.fit(
            asr_brain.hparams.epoch_counter,
            train_data,
            valid_data,
            train_loader_kwargs=train_loader_kwargs,
            valid_loader_kwargs=valid_loader_kwargs,
        )
        epochs = hparams["epoch_counter"].current  # before a checkpoint is loaded for the test
        run_on_main(average_for_test, kwargs={"hparams": hparams})
        tests = (test_datasets, test_loader_kwargs)
        run_tests(asr_brain, hparams, tokens, tests, found, batch_plan, n_encoder, n_head, epochs)
    finally:
        asr_brain.trackers.close()
    if if_main_process():
        logger.info(f"Results: {hparams['results_file']}")


def run_tests(asr_brain, hparams, tokens, tests, found, batch_plan, n_encoder, n_head, epochs):
    """Decodes every test set of ``tests = (datasets, loader options)`` with the
    checkpoint the run tests with, writing ``wer_<test set>.txt`` and ``results.json``."""
    test_datasets, test_loader_kwargs = tests
    if hparams["test_decoding"] == "beam":
        asr_brain.test_searcher = CTCBeamSearcher(
            **hparams["test_beam_search"],
            vocab_list=tokens.vocab_list(),
        )
    tested = final_checkpoint(hparams["save_folder"], hparams["best_metric"])
    asr_brain.results = {
        "experiment": hparams["experiment_name"],
        "mixer": hparams["mixer"],
        "mixer_options": hparams["encoder_config"].config["mixer_options"],
        "d_model": hparams["d_model"],
        "num_layers": hparams["num_layers"],
        "params_encoder": n_encoder,
        "params_total": n_encoder + n_head,
        "pretrained": found["dir"] if found else None,
        "token_type": hparams["token_type"],
        "vocabulary_size": len(tokens),
        "decoding": hparams["test_decoding"],
        "beam_size": hparams["beam_size"] if hparams["test_decoding"] == "beam" else None,
        "lm": hparams["kenlm_model_path"],
        "train_splits": list(hparams["train_splits"]) if not hparams["skip_prep"] else None,
        "train_csv": str(hparams["train_csv"]),
        "epochs": epochs,
        "best_metric": hparams["best_metric"],
        # The checkpoint tested (relative to save_folder) and, when averaged, the checkpoints averaged.
        "checkpoint": os.path.relpath(str(tested.path), hparams["save_folder"]) if tested else None,
        "averaged_checkpoints": tested.meta.get("averaged") if tested else None,
        "avg_checkpoints_select": tested.meta.get("select") if tested else None,
        "global_batch": batch_plan.as_dict() if batch_plan else None,
        "splits": {},
    }
    for name, dataset in test_datasets.items():
        report_unknown_characters(f"test set {name}", asr_brain.unknown_characters[name])
        asr_brain.test_split = name
        asr_brain.evaluate(dataset, min_key=hparams["best_metric"], test_loader_kwargs=test_loader_kwargs)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigurationError as err:  # the one way out of a run that cannot go on: one line, no traceback
        sys.exit(f"Error: {err}")
