"""The machine a measurement ran on, in words, for the reports (the CPU model and its cores, or the GPU).

Example
-------
>>> "cores" in device_name("cpu")
True
>>> line = machine_line(threads=2)
>>> "; date " in line and line.endswith("threads 2")
True
"""

import datetime
import os
import platform


def device_name(device="cpu"):
    """``"<CPU model>, <n> cores"``, or the GPU's name for a CUDA ``device``."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor()
            )
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def machine_line(device="cpu", threads=None):
    """One Markdown line: the device, today's date, torch's version and the threads used."""
    import torch

    threads = f"; threads {threads}" if threads else ""
    return (
        f"device: {device_name(device)}; date {datetime.date.today().isoformat()}; torch {torch.__version__}{threads}"
    )
