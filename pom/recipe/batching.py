"""A global batch that does not depend on the number of GPUs.

A recipe states the batch of one optimizer step (``global_batch_seconds`` of
audio in pre-training, ``global_batch_size`` utterances in fine-tuning) and a
per-device cap (``max_batch_len`` seconds, or ``batch_size`` utterances). With
``W`` processes, the gradient accumulation ``A`` and the per-device batch
``b`` are derived so that::

    A = ceil(G / (cap * W)),     b = G / (W * A) <= cap,     b * W * A = G

so 1, 2 or 8 GPUs run the same experiment (the same audio per optimizer step);
only the memory per device changes. For a batch counted in utterances ``b`` is
rounded down to an integer and the nearest reachable global batch is used
(reported, with a warning when it differs from ``G`` by more than 10 %).

Example
-------
>>> [global_batch_plan(5600, 1400, w).grad_accumulation_factor for w in (1, 2, 8)]
[4, 2, 1]
>>> [global_batch_plan(5600, 1400, w).global_batch for w in (1, 2, 8)]
[5600.0, 5600.0, 5600.0]
>>> plan = global_batch_plan(12, 6, 8, integer=True)
>>> plan.per_device, plan.grad_accumulation_factor, plan.global_batch
(1, 1, 8)
"""

import math
from dataclasses import asdict, dataclass

#: Relative difference between the reachable and the requested global batch
#: above which the recipes warn.
TOLERANCE = 0.1


@dataclass(frozen=True)
class GlobalBatchPlan:
    """How one optimizer step's batch is spread over devices and steps."""

    target: float  # the requested global batch (seconds or utterances)
    per_device: float  # batch per device and forward pass (<= the cap)
    world_size: int
    grad_accumulation_factor: int

    @property
    def global_batch(self):
        """Batch of one optimizer step: ``per_device * world_size * accumulation``."""
        return self.per_device * self.world_size * self.grad_accumulation_factor

    @property
    def off_target(self):
        """Relative difference from the requested global batch."""
        return abs(self.global_batch - self.target) / self.target

    def as_dict(self):
        return dict(asdict(self), global_batch=self.global_batch)


def global_batch_plan(global_batch, per_device_cap, world_size, integer=False):
    """Gradient accumulation and per-device batch for a global batch.

    Arguments
    ---------
    global_batch : float
        Seconds of audio (or utterances) per optimizer step, over all devices.
    per_device_cap : float
        The most a device may hold in one forward pass (``max_batch_len`` or
        ``batch_size``).
    world_size : int
        Number of processes (GPUs).
    integer : bool
        The batch is counted in utterances: ``per_device`` is an integer.

    Returns
    -------
    GlobalBatchPlan
    """
    if not global_batch or global_batch <= 0:
        raise ValueError(f"the global batch must be positive, got {global_batch!r}")
    if not per_device_cap or per_device_cap <= 0:
        raise ValueError(f"the per-device batch must be positive, got {per_device_cap!r}")
    world_size = max(1, int(world_size))
    accumulation = max(1, math.ceil(global_batch / (per_device_cap * world_size) - 1e-9))
    per_device = global_batch / (world_size * accumulation)
    if integer:
        per_device = max(1, int(per_device + 1e-9))
    return GlobalBatchPlan(
        float(global_batch) if not integer else int(global_batch), per_device, world_size, accumulation
    )


def describe(plan, unit="s", measured_per_device=None):
    """One line for the log: the effective batch of an optimizer step.

    ``measured_per_device``: the mean batch a device really gets (dynamic
    batches are filled below their cap), when known.

    Example
    -------
    >>> describe(global_batch_plan(5600, 1400, 2))
    'global batch 5600 s (1.56 h) of audio per optimizer step = 1400 s per device x 2 devices x 2 accumulated steps'
    """
    if unit == "s":
        amount = f"{plan.global_batch:.0f} s ({plan.global_batch / 3600:.2f} h) of audio"
        per = f"{plan.per_device:.0f} s"
    else:
        amount, per = f"{plan.global_batch} utterances", f"{plan.per_device}"
    line = (
        f"global batch {amount} per optimizer step = {per} per device x {plan.world_size} device"
        f"{'s' if plan.world_size > 1 else ''} x {plan.grad_accumulation_factor} accumulated step"
        f"{'s' if plan.grad_accumulation_factor > 1 else ''}"
    )
    if measured_per_device is not None:
        real = measured_per_device * plan.world_size * plan.grad_accumulation_factor
        line += f" (dynamic batches are filled to {measured_per_device:.0f} s on average: {real / 3600:.2f} h per step)"
    return line
