"""One planned utterance spoken by espeak-ng: 16 kHz mono speech with noise at its planned SNR.

:func:`synthesize_utterance` runs Debian's ``espeak-ng`` with the utterance's
voice, variant, pitch and speed (an entry of
:func:`pom.data.synthetic_plan.plan_corpus`), reads its WAV stream, resamples it
to 16 kHz and adds white or brown noise at the planned SNR, seeded from (seed,
split, index): the same waveform whichever process synthesizes it.

Example
-------
>>> from pom.data.synthetic_plan import plan_corpus
>>> utt = plan_corpus(hours=0.01, seed=0, splits=["test-other"])["utterances"][0]
>>> wav = synthesize_utterance(utt, seed=0)
>>> wav.dtype.name, float(abs(wav).max()) <= 0.99, len(wav) > SAMPLE_RATE // 2
('float32', True, True)
>>> bool((synthesize_utterance(utt, seed=0) == wav).all())  # the same noise every time
True

Authors
 * pom-speech contributors 2025
"""

import subprocess

import numpy as np

SAMPLE_RATE = 16000
#: What to do when espeak-ng is missing.
ESPEAK_MISSING = (
    "espeak-ng not found: install it (Debian: apt-get install espeak-ng, or `make install`) "
    "to generate the synthetic corpus"
)


def _seed_for(seed, utt):
    return [int(seed), int(utt["split_index"]), int(utt["index"])]


def synthesize_utterance(utt, seed=0):
    """Returns the 16 kHz float32 waveform of one planned utterance.

    Arguments
    ---------
    utt : dict
        One entry of ``plan_corpus(...)["utterances"]``.
    seed : int
        Corpus seed; the noise is seeded from (seed, split, index).

    Returns
    -------
    numpy.ndarray
        Mono float32 samples in [-1, 1].
    """
    cmd = [
        "espeak-ng", "-v", utt["voice"], "-s", str(utt["speed"]),
        "-p", str(utt["pitch"]), "--stdout", utt["say"],
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, check=True)
    except FileNotFoundError as e:
        raise RuntimeError(ESPEAK_MISSING) from e
    wav = _parse_wav(proc.stdout)
    sr = int.from_bytes(proc.stdout[24:28], "little")
    if sr != SAMPLE_RATE:
        wav = _resample(wav, sr, SAMPLE_RATE)
    rng = np.random.default_rng(_seed_for(seed, utt))
    noise = rng.standard_normal(len(wav))
    if utt["noise_color"] == "brown":
        # Integrated (brown) noise, with its drift removed by a 25 ms
        # moving average: a low rumble rather than a hiss.
        noise = np.cumsum(noise)
        csum = np.concatenate(([0.0], np.cumsum(noise)))
        k = 401
        idx = np.arange(len(noise))
        lo, hi = np.maximum(idx - k // 2, 0), np.minimum(idx + k // 2 + 1, len(noise))
        noise = noise - (csum[hi] - csum[lo]) / (hi - lo)
    speech_power = float(np.mean(wav**2)) + 1e-12
    noise_power = float(np.mean(noise**2)) + 1e-12
    gain = np.sqrt(speech_power / (noise_power * 10 ** (utt["snr_db"] / 10)))
    out = wav + gain * noise
    peak = float(np.max(np.abs(out))) + 1e-9
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)


def _parse_wav(data):
    """Reads espeak-ng's streamed 16-bit WAV (its size fields are bogus)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not return a WAV stream")
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            body = data[pos + 8 :]
            body = body[: len(body) - len(body) % 2]
            return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
        pos += 8 + size
    raise RuntimeError("espeak-ng WAV stream has no data chunk")


def _resample(wav, orig_sr, new_sr):
    import torch
    import torchaudio.functional as AF

    torch.set_num_threads(1)
    return AF.resample(torch.from_numpy(wav), orig_sr, new_sr).numpy()
