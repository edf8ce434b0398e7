"""Long recordings as overlapping windows: where to cut and which frames to keep (plain Python).

A recording of ``frames`` encoder frames is cut into windows of ``window``
frames overlapping by at least ``overlap``; each window is decoded as an
utterance of its own and keeps the frames from the middle of its overlap with
the previous window to the middle of its overlap with the next, so that every
frame of the recording comes from exactly one window, at least ``overlap // 2``
frames from that window's cut edges. The PyTorch engine
(:class:`pom.inference.CTCModel`) and the ONNX Runtime transcriber
(:mod:`pom.runtime.transcriber`) both cut with :func:`segment_plan`, so they
decode a long file the same way.

Example
-------
>>> segment_plan(10, window=4, overlap=2)
[(0, 4, 0, 3), (2, 6, 3, 5), (4, 8, 5, 7), (6, 10, 7, 10)]
>>> segment_plan(3, window=4, overlap=2)
[(0, 3, 0, 3)]
>>> window_frames(20.0, 4.0, frames_per_second=25.0)
(500, 100)
"""

#: ``long_form`` values: auto = segments for inputs longer than ``long_seconds``.
LONG_FORMS = ("auto", "segments", "whole")
#: Inputs longer than this (seconds) take the long-form path (default).
LONG_SECONDS = 30.0
#: Segment windows (seconds) and their least overlap.
SEGMENT_SECONDS = 20.0
OVERLAP_SECONDS = 4.0
#: Windows decoded together.
SEGMENT_BATCH = 4


def segment_plan(frames, window, overlap):
    """Windows over ``frames`` encoder frames: ``[(start, end, keep_start, keep_end), ...]``.

    Windows of ``window`` frames start every ``window - overlap`` frames; the last one ends
    at ``frames`` (it may overlap its neighbour more). Each window keeps the frames from the
    middle of its overlap with the previous window to the middle of its overlap with the
    next: the kept ranges tile ``[0, frames)`` exactly, each kept frame at least
    ``overlap // 2`` frames from its window's cut edges. One window if ``frames <= window``.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"segments need 0 <= overlap < window, got window {window} and overlap {overlap}")
    if frames <= window:
        return [(0, frames, 0, frames)]
    starts = list(range(0, frames - window, window - overlap)) + [frames - window]
    cuts = [0] + [(starts[k + 1] + starts[k] + window) // 2 for k in range(len(starts) - 1)] + [frames]
    return [(s, s + window, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]


def window_frames(segment_seconds, overlap_seconds, frames_per_second):
    """``(window, overlap)`` in encoder frames for windows of ``segment_seconds`` overlapping
    by ``overlap_seconds`` (at least one frame per window, the overlap below the window)."""
    window = max(1, int(round(segment_seconds * frames_per_second)))
    return window, min(window - 1, int(round(overlap_seconds * frames_per_second)))


def long_path(seconds, long_form="auto", long_seconds=LONG_SECONDS, segment_seconds=SEGMENT_SECONDS):
    """How an input of ``seconds`` is decoded: ``"segments"``, ``"whole"`` or None (the plain
    pass, in a batch with other files).

    Example
    -------
    >>> long_path(12.0), long_path(45.0), long_path(45.0, "whole"), long_path(25.0, "segments")
    (None, 'segments', 'whole', 'segments')
    """
    if long_form == "segments":
        return "segments" if seconds > segment_seconds else None
    if seconds <= long_seconds:
        return None
    return "whole" if long_form == "whole" else "segments"


def check_long_form(long_form, long_seconds, segment_seconds, overlap_seconds):
    """Raises a ValueError naming the first bad long-form option."""
    if long_form not in LONG_FORMS:
        raise ValueError(f"long_form must be one of {LONG_FORMS}, got {long_form!r}")
    if not long_seconds >= 0:
        raise ValueError(f"long_seconds must be >= 0, got {long_seconds}")
    if not 0 <= overlap_seconds < segment_seconds:
        raise ValueError(
            f"segments need 0 <= overlap_seconds < segment_seconds, got {overlap_seconds} and {segment_seconds}"
        )
