"""Data for pom-speech: LibriSpeech manifests and a synthetic LibriSpeech.

* :func:`pom.data.librispeech.prepare_librispeech` writes SpeechBrain CSVs
  (``ID,duration,wav,spk_id,wrd``) for the LibriSpeech splits, from the split
  folders that :mod:`pom.data.librispeech_folders` reads and checks, as the
  manifests of :mod:`pom.data.csv_manifest`.
* :func:`pom.data.synthetic.make_synthetic_librispeech` (or
  ``python -m pom.data.synthetic --out DIR``) writes an espeak-ng corpus
  with LibriSpeech's exact layout, to run every recipe without LibriSpeech:
  planned by :mod:`pom.data.synthetic_plan`, spoken by :mod:`pom.data.espeak`.
"""

from pom.data.librispeech import prepare_librispeech

__all__ = ["prepare_librispeech"]
