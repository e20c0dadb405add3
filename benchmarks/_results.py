"""Result files of the benchmarks: the figures with the command that made them, the machine and the date.

Every benchmark whose figures appear in the documentation writes one JSON file (``--json PATH``)::

    {"benchmark": "...", "command": "python benchmarks/...", "machine": {...}, "date": "...",
     "transcribed": false, "data": {...}}

A benchmark's command line starts from :func:`parser` (``--json FILE`` and the options most benchmarks
share) and :func:`begin` notes the clock and the load average when it starts, for the result file.

``benchmarks/render_tables.py`` renders the documentation's tables from the committed files in
``docs/results/``. Paths to data sets are recorded by their role (``--data-dir MNIST_DIR``), never as the
folder they happened to be in on the measuring machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

__all__ = ["machine", "command", "write_result", "load_average", "parser", "begin", "Started"]

#: The options several benchmarks share: name -> (type, help); a benchmark names those it takes, with
#: its defaults, in :func:`parser`.
COMMON_OPTIONS = {
    "batch_size": (int, "samples per step"),
    "repeats": (int, "interleaved rounds"),
    "threads": (int, "torch threads (0: leave the default)"),
    "seed": (int, "seed of the data, the noise and the training"),
}


def load_average() -> list[float] | None:
    """The machine's load average over 1, 5 and 15 minutes (``None`` where unknown)."""
    try:
        with open("/proc/loadavg") as fh:
            return [float(v) for v in fh.read().split()[:3]]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> dict:
    """What the figures were measured on: CPU, cores, OS, Python and library versions, load average."""
    info = {"cpu": _cpu_name(), "cores": os.cpu_count(), "os": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version()}
    for name in ("torch", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def command(argv: list[str] | None = None, roles: dict[str, str] | None = None,
            env: tuple[str, ...] = ("OMP_NUM_THREADS",)) -> str:
    """The command line that ran, as a user would type it from the repository root.

    ``roles`` maps an option to the placeholder its value is recorded as (``{"--data-dir": "MNIST_DIR"}``)."""
    argv = list(sys.argv if argv is None else argv)
    roles = roles or {}
    script, here = Path(argv[0]).resolve(), Path(__file__).resolve().parent
    name = script.relative_to(here).as_posix() if script.is_relative_to(here) else script.name
    head = ["python", f"benchmarks/{name}"] if script.suffix == ".py" else [script.name]
    args, i = [], 1
    while i < len(argv):
        arg = argv[i]
        if "=" in arg and arg.split("=", 1)[0] in roles:
            args.append(f"{arg.split('=', 1)[0]}={roles[arg.split('=', 1)[0]]}")
        elif arg in roles and i + 1 < len(argv):
            args += [arg, roles[arg]]
            i += 1
        else:
            args.append(arg)
        i += 1
    prefix = [f"{k}={os.environ[k]}" for k in env if k in os.environ]
    return shlex.join([*prefix, *head, *args])


def _clean(value):
    """JSON without NaN/inf (written as null), floats rounded to 6 significant digits."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalars
        return _clean(value.item())
    return value


def write_result(path: str | Path, benchmark: str, data: dict, *, cmd: str | None = None,
                 load_before: list[float] | None = None, wall_seconds: float | None = None) -> Path:
    """Write ``data`` with the command, the machine and the date to ``path`` (JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["load_average"] = {"before": load_before, "after": load_average()}
    record = {
        "benchmark": benchmark,
        "command": cmd if cmd is not None else command(),
        "machine": info,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "transcribed": False,
        **({"wall_seconds": round(wall_seconds, 1)} if wall_seconds is not None else {}),
        "data": _clean(data),
    }
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def parser(doc: str, json_help: str = "also write the figures, command, machine and date to this file",
           **defaults) -> argparse.ArgumentParser:
    """A benchmark's command line: ``doc`` (its docstring) as the description, ``--json FILE``, and each
    option of :data:`COMMON_OPTIONS` named in ``defaults`` (``repeats=30``) with that default; a value
    ``(default, help)`` gives the option its own help."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in defaults.items():
        kind, text = COMMON_OPTIONS[name]
        default, text = default if isinstance(default, tuple) else (default, text)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    p.add_argument("--json", help=json_help)
    return p


class Started:
    """The load average and the clock when a benchmark started: what its result file records."""

    def __init__(self) -> None:
        self.load_before = load_average()
        self.t_start = time.perf_counter()

    def write(self, path: str | Path | None, benchmark: str, data: dict, *, roles: dict[str, str] | None = None) -> None:
        """:func:`write_result` to ``path`` (nothing without one), with the wall time since the start; ``roles``
        as in :func:`command`."""
        if path:
            write_result(path, benchmark, data, cmd=command(roles=roles), load_before=self.load_before,
                         wall_seconds=time.perf_counter() - self.t_start)


def begin(args: argparse.Namespace) -> Started:
    """Set torch's threads from ``args.threads`` (0 or none: leave the default), then start the clock."""
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    return Started()
