"""`--profile DIR`: py-spy samples the server over a fanout run's measured window.

The orchestrator starts `py-spy record --format raw` against the server's pid at the
generator's `measure_start` event and stops it with SIGINT (py-spy then writes its file) at
`send_end`, so the profile covers exactly the window the latency and CPU figures come from.
py-spy runs on the generator's CPU, not the server's; it pauses the server briefly for each
sample (100 a second), which is part of that run's figures.

The raw file is py-spy's collapsed stacks, one line per distinct stack: `thread (tid): name;
outer (file:line);...;inner (file:line) count` (`--threads --function`: frames are functions,
with the line they start on). `summarize` folds them into the top functions by own time (the
innermost Python frame of a sample: that function and the C code it calls, such as a socket
write) and by inclusive time (anywhere on the stack). Without `--idle`, py-spy keeps only the
samples where a thread was running, so a thread's sample count over the window's sampling
instants is how busy it was.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import servers

RATE = 100  # samples per second: py-spy's default
TOP = 20


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def executable() -> str | None:
    """py-spy next to this interpreter (the venv's, from the bench extra), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """Stacks folded per function; counts are samples."""

    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    samples: int = 0

    def add(self, frames: list[str], count: int) -> None:
        self.samples += count
        if frames:
            self.own[frames[-1]] += count
            for frame in set(frames):  # once per sample, however deep the recursion
                self.inclusive[frame] += count


@dataclass
class Profiles:
    """Every thread's profile (by thread name) and all threads together."""

    threads: dict[str, Profile] = field(default_factory=dict)
    total: Profile = field(default_factory=Profile)


def collapse(lines: Iterable[str]) -> Profiles:
    """Fold py-spy's raw lines (collapsed stacks with a count) into per-function counts."""
    out = Profiles()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        while frames and frames[0].startswith(("process ", "thread (")):
            head = frames.pop(0)
            if head.startswith("thread ("):
                thread = head.partition(": ")[2] or head
        out.threads.setdefault(thread, Profile()).add(frames, int(count_text))
        out.total.add(frames, int(count_text))
    return out


def _tables(prof: Profile, rate: int, top: int) -> list[str]:
    """Top functions by own and by inclusive time, in % of `prof`'s samples and seconds.

    Frames on (nearly) every sample's stack (`<module>`, `main`, the loop's `run`) say nothing
    in the inclusive table: they are named once instead of listed."""
    total = max(1, prof.samples)

    def row(first: int, second: int, name: str) -> str:
        return (f"{100.0 * first / total:6.1f} {first / rate:6.2f} "
                f"{100.0 * second / total:6.1f}  {name}")

    lines = [f"top {top} functions by own time (innermost Python frame, with the C it calls)",
             "  own %  own s  incl %  function"]
    lines += [row(n, prof.inclusive[name], name) for name, n in prof.own.most_common(top)]
    everywhere = [name for name, n in prof.inclusive.items() if n >= 0.99 * total]
    rest = [(name, n) for name, n in prof.inclusive.most_common() if name not in everywhere]
    lines += ["", f"top {top} functions by inclusive time (anywhere on the stack)",
              " incl %  incl s  own %  function"]
    lines += [row(n, prof.own[name], name) for name, n in rest[:top]]
    if everywhere:
        lines.append(f"(on every sample's stack, not listed: {len(everywhere)} frames from "
                     f"{min(everywhere, key=len)})")
    return lines


MAIN_THREAD = "MainThread"  # the event loop's thread in chatserver (and every other target)


def summarize(profs: Profiles, *, label: str, pid: int, window_s: float, rate: int = RATE,
              top: int = TOP) -> str:
    """The text summary: how busy each thread was, the event loop's thread's top functions,
    then all threads' top functions by own time."""
    instants = max(1.0, window_s * rate)
    ranked = sorted(profs.threads.items(), key=lambda kv: -kv[1].samples)
    busy = ", ".join(f"{name} {p.samples:,} ({100.0 * p.samples / instants:.1f} %)"
                     for name, p in ranked)
    lines = [f"py-spy profile of {label} (server pid {pid}) over the measured window: "
             f"{window_s:.1f} s at {rate} samples/s (~{instants:,.0f} sampling instants)",
             f"busy samples per thread (share of the instants it was running): {busy or 'none'}",
             "s = samples / rate (seconds of that thread's time); own time of the frame "
             "that runs the loop (Runner.run) is uvloop's C code: polling, socket reads, "
             "transport writes it makes itself, callback scheduling"]
    main = profs.threads.get(MAIN_THREAD)
    if main is not None:
        lines += ["", f"== {MAIN_THREAD} (the event loop): % of its {main.samples:,} busy "
                      "samples", *_tables(main, rate, top)]
    lines += ["", f"== all threads: % of their {profs.total.samples:,} busy samples",
              *_tables(profs.total, rate, top // 2)[: top // 2 + 2]]
    return "\n".join(lines) + "\n"


class Sampler:
    """One py-spy recording of one server process: start(), stop(), then finish()."""

    def __init__(self, out_dir: Path, name: str, label: str, pid: int, cpu: str,
                 subprocesses: bool = False) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.label, self.pid, self.cpu, self.subprocesses = label, pid, cpu, subprocesses
        self.raw_path = out_dir / f"{slug(name)}.pyspy-raw.txt"
        self.summary_path = out_dir / f"{slug(name)}.profile.txt"
        self.log_path = out_dir / f"{slug(name)}.pyspy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = self.t1 = 0.0
        self.problem = ""

    def start(self) -> None:
        exe = executable()
        if exe is None:
            self.problem = "py-spy is not installed (pip install -e '.[bench]')"
            return
        argv = [exe, "record", "--pid", str(self.pid), "--format", "raw", "--threads",
                "--function", "--rate", str(RATE), "--output", str(self.raw_path)]
        if self.subprocesses:
            argv.append("--subprocesses")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                servers.pinned(self.cpu, argv), stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
                preexec_fn=servers.die_with_parent)  # noqa: PLW1509 - see ManagedProcess
        servers.register(self.proc.pid)
        self.t0 = time.monotonic()

    def stop(self) -> None:
        """End the recording: SIGINT makes py-spy write what it sampled."""
        if self.proc is not None and self.proc.poll() is None and not self.t1:
            self.t1 = time.monotonic()
            self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for py-spy to write its file; summarize it. Never raises: a failed profile
        is reported in the result, the run's figures still count."""
        if self.proc is None:
            return {"error": self.problem or "the measured window never started"}
        self.stop()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            servers.kill_group(self.proc.pid)
            self.proc.wait()
        servers.unregister(self.proc.pid)
        log = self.log_path.read_text(errors="replace").strip()
        if not self.raw_path.exists() or self.raw_path.stat().st_size == 0:
            return {"error": f"py-spy wrote no samples (exit {self.proc.returncode}): "
                             f"{log[-800:]}"}
        window = (self.t1 or time.monotonic()) - self.t0
        with open(self.raw_path) as f:
            profs = collapse(f)
        text = summarize(profs, label=self.label, pid=self.pid, window_s=window)
        self.summary_path.write_text(text)
        main = profs.threads.get(MAIN_THREAD)
        return {"raw": str(self.raw_path), "summary_file": str(self.summary_path),
                "summary": text, "samples": profs.total.samples,
                "main_thread_samples": main.samples if main else 0,
                "window_s": round(window, 3), "pid": self.pid}


def render(label: str, profile: dict[str, Any]) -> str:
    """The report's profile section of one run."""
    if "error" in profile:
        return f"## profile of {label}\n\nprofile FAILED: {profile['error']}"
    return (f"## profile of {label}\n\n```\n{profile['summary']}```\n\n"
            f"raw stacks: {profile['raw']}\nsummary: {profile['summary_file']}\n"
            "(py-spy ran on the generator's CPU during this run: its own CPU is in the "
            "table's \"other CPU\", its pauses of the server in the server's figures)")


def kill(sampler: Sampler | None) -> None:
    """Last resort on an error path: py-spy must not outlive the run."""
    if sampler is not None and sampler.proc is not None and sampler.proc.poll() is None:
        with contextlib.suppress(OSError):
            servers.kill_group(sampler.proc.pid)
        servers.unregister(sampler.proc.pid)
