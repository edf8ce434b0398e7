"""One measurement in a fresh Python process: its own peak memory, a time limit, a memory limit.

A measurement is a function ``worker(cfg) -> dict`` of a module, named
``"module:function"``. :func:`measure` runs it in ``python -m
pom.measure.process``, so that the peak resident memory that the worker reads
(``VmHWM`` of ``/proc/self/status``, through :class:`PeakMemory`) belongs to
that measurement alone, never to what the caller ran before. The child runs
under a data-size limit (``RLIMIT_DATA``, by default 85 % of the memory
available when the caller starts it), so that running out of memory is an error
in the child, recorded as ``oom``, not the kernel's OOM killer; it is killed
after ``timeout`` seconds (``timeout``); any other failure is recorded as
``error: <type>: <message>``. The result is the worker's dict with
``"status": "ok"``, or ``{"status": <failure>}``.

Example
-------
>>> result = measure("pom.measure.process:allocate", {"mib": 64})
>>> result["status"], result["extra_rss_MiB"] >= 60
('ok', True)
>>> measure("pom.measure.process:allocate", {"mib": -1})["status"]
'error: ValueError: negative count'
"""

import importlib
import json
import os
import resource
import subprocess
import sys

#: The line of the child's output that carries its result.
RESULT = "RESULT "


def measure(worker, cfg, threads=1, timeout=None, memory_limit="auto", cwd=None):
    """Runs ``worker`` (``"module:function"``) on ``cfg`` (JSON-serializable) in a
    fresh process with ``threads`` CPU threads; the result dict (see the module).

    ``memory_limit``: bytes, ``"auto"`` (:func:`default_memory_limit`) or None (no
    limit). ``cwd``: the child's working directory, which is also where it finds
    ``module`` if the module is not installed (``python -m`` puts it on the path)."""
    if memory_limit == "auto":
        memory_limit = default_memory_limit()
    job = json.dumps({"worker": worker, "cfg": cfg, "threads": threads})
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pom.measure.process", job],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_limits(memory_limit),
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return {"status": "timeout"}
    for line in out.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    if proc.returncode in (-9, 137) or "can't allocate memory" in err.lower() or "memoryerror" in err.lower():
        return {"status": "oom"}
    last = (err.strip().splitlines() or [""])[-1][:160]
    return {"status": f"error: exit {proc.returncode}: {last}"}


def _limits(memory_limit):
    def apply():
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
        os.setpgrp()  # its own process group: a time-out kills the worker and its children

    return apply


def run_worker(worker, cfg, threads=1):
    """Runs ``worker`` on ``cfg`` in this process: its dict with ``"status": "ok"``,
    or the failure as a status."""
    try:
        module, _, function = worker.partition(":")
        fn = getattr(importlib.import_module(module), function)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        return {"status": "ok", **fn(cfg)}
    except MemoryError:
        return {"status": "oom"}
    except Exception as err:  # noqa: BLE001 -- every failure is a recorded result
        if is_oom(err):
            return {"status": "oom"}
        return {"status": f"error: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}


def failed(status):
    """Whether a status ends a series (longer inputs are then skipped): out of memory, time-out, error."""
    return status in ("oom", "timeout") or status.startswith("error")


def is_oom(err):
    """Whether an exception is an out-of-memory error (CUDA or CPU)."""
    if type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def proc_status_kb(key):
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class PeakMemory:
    """``with PeakMemory() as memory: ...``: ``memory.peak_MiB``, this process's peak
    resident memory during the block (the peak counter is reset on entry), and
    ``memory.extra_MiB``, that peak above the resident memory on entry."""

    def __enter__(self):
        self.base_MiB = proc_status_kb("VmRSS") / 1024
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.peak_MiB = proc_status_kb("VmHWM") / 1024
        self.extra_MiB = self.peak_MiB - self.base_MiB
        return False


def available_memory_bytes():
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None if unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_memory_limit(share=0.85):
    """``share`` of the memory available now, in bytes (None if unknown)."""
    available = available_memory_bytes()
    return int(share * available) if available else None


def allocate(cfg):
    """A worker that allocates and touches ``cfg["mib"]`` MiB: a check of the measurement."""
    if cfg["mib"] < 0:
        raise ValueError("negative count")
    with PeakMemory() as memory:
        block = bytearray(cfg["mib"] * 2**20)
        block[::4096] = b"\1" * len(block[::4096])
    return {"peak_rss_MiB": round(memory.peak_MiB, 1), "extra_rss_MiB": round(memory.extra_MiB, 1)}


def main(argv=None):
    """The child: ``python -m pom.measure.process '{"worker": ..., "cfg": ..., "threads": ...}'``."""
    job = json.loads((sys.argv[1:] if argv is None else argv)[0])
    print(RESULT + json.dumps(run_worker(job["worker"], job["cfg"], job.get("threads", 1))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
