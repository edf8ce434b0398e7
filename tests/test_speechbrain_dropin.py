"""Our encoder as a drop-in for SpeechBrain's own BEST-RQ recipes: the YAML block of
hparams/speechbrain/mixer_encoder.yaml in SpeechBrain's pre-training and fine-tuning
YAML layouts, called as their unmodified train.py files call it."""

import pathlib

import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.features import Fbank
from speechbrain.utils.checkpoints import Checkpointer

SNIPPET = (pathlib.Path(__file__).resolve().parents[1] / "hparams" / "speechbrain" / "mixer_encoder.yaml").read_text()

# The keys of SpeechBrain's BEST-RQ.yaml that the block refers to, tiny, and the modules around it.
PRETRAIN_YAML = """
d_model: 32
num_encoder_layers: 2
d_ffn: 64
transformer_dropout: 0.1
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: (8, 10, 80)
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: (128, 32)
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)
{snippet}
Quantizer: !new:speechbrain.nnet.quantisers.RandomProjectionQuantizer
    input_dim: 320
    cb_dim: 16
    cb_vocab: 64
linear: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: 64
normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    update_until_epoch: 4
model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <wrapper>, !ref <Quantizer>, !ref <linear>]
"""

# train_sb_BEST-RQ.yaml: the same block named enc, loaded into pt_model by its Pretrainer.
FINETUNE_YAML = """
d_model: 32
num_encoder_layers: 2
d_ffn: 64
transformer_dropout: 0.1
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: (8, 10, 80)
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: (128, 32)
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)
{snippet}
pt_model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <enc>]
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    collect_in: {collect}
    loadables:
        pt_model: !ref <pt_model>
    paths:
        pt_model: {model_ckpt}
"""


def test_speechbrain_recipes_run_our_encoder(tmp_path):
    torch.manual_seed(0)
    pre = load_hyperpyyaml(PRETRAIN_YAML.format(snippet=SNIPPET))
    wavs, wav_lens = torch.randn(2, 16000), torch.tensor([1.0, 0.7])
    feats = pre["normalize"](Fbank(n_mels=80)(wavs), wav_lens, epoch=1)  # 101 frames
    feats = F.pad(feats, (0, 0, 0, 3))  # pad_feats: divisible by 4
    # BEST-RQ train.py: src = CNN(feats); enc_out = wrapper(src, wav_lens); logits = linear(enc_out)
    src = pre["CNN"](feats)
    enc_out = pre["wrapper"](src, wav_lens)
    logits = pre["linear"](enc_out)
    assert enc_out.shape == (2, 26, 32) and logits.shape == (2, 26, 64)
    targets = pre["Quantizer"](feats.view(2, 26, 320))
    F.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1)).backward()
    assert all(p.grad is not None for p in pre["wrapper"].parameters())
    ckpt = Checkpointer(tmp_path / "save", {"model": pre["model"]}).save_checkpoint()

    fine = load_hyperpyyaml(FINETUNE_YAML.format(
        snippet=SNIPPET.replace("wrapper:", "enc:"), collect=tmp_path / "collect", model_ckpt=ckpt.path / "model.ckpt",
    ))  # fmt: skip
    fine["pretrainer"].collect_files()
    fine["pretrainer"].load_collected()
    pre["model"].eval(), fine["pt_model"].eval()
    with torch.no_grad():  # train_with_bestrq.py: src = pt_model[0](feats); enc_out = pt_model[1](src, wav_lens)
        expected = pre["wrapper"](pre["CNN"](feats), wav_lens)
        got = fine["pt_model"][1](fine["pt_model"][0](feats), wav_lens)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert (
        type(fine["pt_model"][1]).__name__ == "MixerEncoder" and fine["pt_model"][1].encoder.layers[0].mixer.degree == 2
    )
