"""``python -m pom.convert SRC OUT [--degree K] [--expansion D] [--overwrite]``.

Converts a SpeechBrain or PoM-authors BEST-RQ checkpoint into pom-speech's
pre-trained layout (see :mod:`pom.convert`) and prints what it wrote.

Authors
 * pom-speech contributors 2025
"""

import argparse
import os
import sys

import torch

from pom.convert import FORMAT_NAMES, CheckpointFormatError, convert_checkpoint
from pom.convert.layout import CONFIG, MODEL, NORMALIZE, PROVENANCE, read_provenance
from pom.recipe.checkpoints import EncoderConfig


def describe(out_dir):
    """Lines saying what a converted folder holds."""
    config = EncoderConfig.read(os.path.join(out_dir, CONFIG))
    record = read_provenance(out_dir) or {}
    stats = torch.load(os.path.join(out_dir, NORMALIZE), map_location="cpu", weights_only=True)
    options = ", ".join(f"{k} {v}" for k, v in sorted(config["mixer_options"].items()))
    lines = [
        f"{FORMAT_NAMES.get(record.get('format'), 'checkpoint')} {record.get('source', '?')}",
        f"  -> {out_dir}",
        f"  {MODEL}: [CNN {tuple(config['cnn_channels'])}, MixerEncoder] mixer {config['mixer']} ({options}), "
        f"{config['num_layers']} layers, d_model {config['d_model']}, d_ffn {config['d_ffn']}, "
        f"kernel {config['kernel_size']}, positions {config['positional_encoding']}",
        f"  {NORMALIZE}: norm_type {config['norm_type']}"
        + (
            f" (count {stats['count']}, {stats['glob_mean'].numel()} mel bins)"
            if config["norm_type"] == "global"
            else ""
        ),
        f"  {CONFIG}, {PROVENANCE}",
    ]
    lines.extend(f"  note: {note}" for note in record.get("notes", []))
    return lines


def main(argv=None):
    """``python -m pom.convert SRC OUT [--degree K] [--expansion D] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pom.convert",
        description="Convert a SpeechBrain or PoM-authors BEST-RQ checkpoint into pom-speech's pre-trained layout.",
    )
    parser.add_argument("src", help="run output folder, save/ folder or CKPT+* folder")
    parser.add_argument(
        "out", help="folder to write (model.ckpt, normalize.ckpt, encoder_config.json, converted_from.json)"
    )
    parser.add_argument(
        "--degree", type=int, default=None, help="PoM degree k (authors' checkpoints without hyperparams.yaml)"
    )
    parser.add_argument("--expansion", type=int, default=None, help="PoM expansion D (idem)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in OUT")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(
            args.src, args.out, degree=args.degree, expansion=args.expansion, overwrite=args.overwrite
        )
    except (FileNotFoundError, CheckpointFormatError) as err:
        sys.exit(f"Error: {err}")
    if out != os.path.abspath(os.path.expanduser(args.out)):
        print(f"{out} is already in pom-speech's layout: nothing converted, use it as it is")
    else:
        print("\n".join(describe(out)))
    return out


if __name__ == "__main__":
    main()
