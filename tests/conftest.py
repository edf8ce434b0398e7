"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def synthetic_librispeech(tmp_path_factory):
    """Path of a tiny synthetic LibriSpeech root, generated once per session.

    All seven splits, ``pom.data.synthetic.TEST_HOURS`` hours in total
    (about 5 minutes of train audio and a few utterances per dev/test
    split); read-only for tests: copy a split before modifying it.
    """
    from pom.data.synthetic import TEST_HOURS, make_synthetic_librispeech

    out = tmp_path_factory.mktemp("synthetic_corpus")
    return make_synthetic_librispeech(str(out), hours=TEST_HOURS, seed=0, progress=False)


@pytest.fixture(autouse=True)
def float32_means_float32():
    """TF32 off during every test, the previous flags restored after: the suite's
    float32 comparisons hold on a GPU machine too (importing SpeechBrain turns TF32 on)."""
    from pom.precision import tf32_disabled

    with tf32_disabled():
        yield
