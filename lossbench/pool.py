"""Worker processes lossbench owns: a worker that dies costs the call it was running, never the others.

A parallel sweep (lossbench.workers) runs its jobs on a :class:`Pool`: long-lived ``python -m
lossbench.pool_worker`` processes, each running one call at a time. Calls and answers are cloudpickled
frames over two pipes of each worker's own (its stdout and stderr stay the terminal's). This process
hands each worker its next call, reads the answers, and watches every worker:

- a worker that exits or is killed (SIGKILL, the kernel's out-of-memory killer) fails its call with
  :class:`WorkerLost`: its pid, exit code or signal, whether the kernel says it ran out of memory
  (:func:`kernel_oom_kill`), the call's peak memory, and what the call said while it ran (a job's run
  id, lossbench.pool_worker); :meth:`Pool.map` gives it to its caller, starts a fresh worker in its
  place and goes on; the other workers are not touched;
- memory: each call's peak resident memory (the kernel's high-water mark, reset when the call starts)
  comes back with its answer, and is sampled every :data:`SAMPLE_S` while it runs;
- a worker whose pool's process is gone (a kill -9 of the sweep) stops its call as SIGTERM stops a run.

Why not joblib's loky: when one loky worker dies, loky declares its executor broken and terminates every
worker, so one out-of-memory kill ended every job of the sweep.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

log = logging.getLogger("lossbench")

FRAME = struct.Struct("<Q")  # each message: its length, then its cloudpickled bytes
SAMPLE_S = 0.5  # how often the memory of a worker running a call is read
WORKER_MODULE = "lossbench.pool_worker"
INTERRUPT_GRACE_S = 20  # after Ctrl-C: how long the workers may take to end their runs KILLED themselves
FAILED_STARTS = 3  # workers in a row that die before their first call answers: the pool stops replacing them


# ----------------------------------------------------------------------------------------- frames


def frame(message: Any) -> bytes:
    data = cloudpickle.dumps(message)
    return FRAME.pack(len(data)) + data


def read_frame(stream) -> bytes:
    """The next message's bytes from a blocking binary ``stream``; EOFError when it ends."""
    header = stream.read(FRAME.size)
    if len(header) < FRAME.size:
        raise EOFError
    (size,) = FRAME.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


class Frames:
    """Whole messages out of the bytes a pipe gives, however they were split."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        found = []
        while len(self.buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(self.buffer)
            if len(self.buffer) < FRAME.size + size:
                break
            found.append(bytes(self.buffer[FRAME.size : FRAME.size + size]))
            del self.buffer[: FRAME.size + size]
        return found


@dataclass(frozen=True)
class Kept:
    """In a call's arguments: the object :meth:`Pool.keep` sent each worker once, under ``key``."""

    key: str


@dataclass(frozen=True)
class Answer:
    """What a call returned, its peak resident memory (bytes; None where unknown) and what it said meanwhile."""

    value: Any
    peak_bytes: int | None
    notes: tuple = ()


# ----------------------------------------------------------------------------------------- memory


def memory_of(pid: int) -> tuple[int, int] | None:
    """(resident, high-water mark) of process ``pid`` in bytes, from /proc; None when it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            found[line[:5]] = int(line.split()[1]) * 1024
    return (found["VmRSS"], found["VmHWM"]) if len(found) == 2 else None


def reset_peak() -> bool:
    """Make this process's high-water mark its resident memory now (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def oom_counters(pid: int) -> dict[str, int]:
    """{counter file: out-of-memory kills it counted} of the memory cgroups process ``pid`` is in (cgroup v2
    ``memory.events``, v1 ``memory.oom_control``); empty where none can be read."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    files = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            files.append(f"/sys/fs/cgroup{path.rstrip('/')}/memory.events")
        elif "memory" in controllers.split(","):
            files.append(f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control")
    counts = {}
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                counts[name] = int(line.split()[1])
    return counts


def kernel_oom_kill(pid: int, since: float) -> bool | None:
    """Whether the kernel's log says its out-of-memory killer killed ``pid`` after ``since`` (time.monotonic(),
    the kernel log's clock); None when the log cannot be read (``dmesg`` is often restricted to root)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    wanted = f"Killed process {pid} ("
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return False
            except OSError:  # a record overwritten while reading (EPIPE): read on
                continue
            head, _, message = record.partition(";")
            fields = head.split(",")
            if wanted in message and len(fields) > 2 and int(fields[2]) / 1e6 >= since - 1:
                return True
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- a worker


class WorkerLost(Exception):
    """The worker running a call exited or was killed before it answered."""

    def __init__(
        self,
        pid: int,
        returncode: int | None,
        out_of_memory: bool | None = None,
        peak_bytes: int | None = None,
        notes: tuple = (),
        text: str | None = None,
    ):
        self.pid, self.returncode, self.out_of_memory = pid, returncode, out_of_memory
        self.peak_bytes, self.notes = peak_bytes, notes
        super().__init__(text or self.how())

    @property
    def signal_name(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def how(self) -> str:
        """``worker 4321 killed by SIGKILL (out of memory)``, ``worker 4321 exited with code 1``."""
        if self.signal_name is not None:
            return f"worker {self.pid} killed by {self.signal_name}" + (
                " (out of memory)" if self.out_of_memory else ""
            )
        return f"worker {self.pid} exited with code {self.returncode}"


class Worker:
    """One worker process, as the pool sees it: its pipes, the calls it was given, its memory."""

    def __init__(self, command: list[str]):
        requests_read, self.requests = os.pipe()
        self.answers, answers_write = os.pipe()
        self.process = subprocess.Popen(
            [*command, str(requests_read), str(answers_write)],
            stdin=subprocess.DEVNULL,
            pass_fds=(requests_read, answers_write),
        )
        os.close(requests_read)
        os.close(answers_write)
        self.pid, self.started = self.process.pid, time.monotonic()
        self.resettable = os.access(f"/proc/{self.pid}/clear_refs", os.W_OK)  # its high-water mark: see reset_peak
        self.frames = Frames()
        self.calls: deque[tuple[int, Future]] = deque()  # sent, not answered yet; the first one is running
        self.notes: list = []  # what the running call said so far
        self.kept: set[str] = set()
        self.peak = 0  # bytes, sampled, of the running call
        self.oom_seen: dict[str, int] = {}  # the out-of-memory counters of its cgroups, as first seen
        self.first: Future | None = None  # the pool's first call for every worker (the warm-up)
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._write, name=f"lossbench-pool-{self.pid}", daemon=True).start()

    def _write(self) -> None:
        """Requests go out from a thread: a worker still importing reads nothing, and the pool must not wait."""
        with os.fdopen(self.requests, "wb") as out:
            while (data := self.outbox.get()) is not None:
                try:
                    out.write(data)
                    out.flush()
                except OSError:  # the worker is gone: the pool sees its answers end
                    return

    def send(self, message: Any) -> None:
        self.outbox.put(frame(message))

    def sample(self) -> None:
        """Its memory now (and the high-water mark since its call started, where the worker can reset it) and
        the cgroups counting its out-of-memory kills."""
        memory = memory_of(self.pid)
        if memory is not None:
            self.peak = max(self.peak, *(memory if self.resettable else memory[:1]))
        for name, count in oom_counters(self.pid).items():
            self.oom_seen.setdefault(name, count)

    def out_of_memory(self) -> bool | None:
        """Whether the kernel killed it for memory: its log when readable (exact), else its cgroups' counters."""
        said = kernel_oom_kill(self.pid, self.started)
        if said is False and self.process.returncode == -signal.SIGKILL:
            time.sleep(0.1)  # the kernel logs the kill as it sends it: give the log its line
            said = kernel_oom_kill(self.pid, self.started)
        if said is not None:
            return said
        counts = {name: count for name in self.oom_seen if (count := _oom_count(name)) is not None}
        return any(counts[name] > self.oom_seen[name] for name in counts) if counts else None


def _oom_count(name: str) -> int | None:
    try:
        return next(
            int(line.split()[1]) for line in Path(name).read_text().splitlines() if line.startswith("oom_kill ")
        )
    except (OSError, StopIteration, ValueError):
        return None


# ----------------------------------------------------------------------------------------- the pool


class Pool:
    """``size`` worker processes; every worker (a replacement too) first runs ``first`` = (function, args)."""

    def __init__(self, size: int, first: tuple[Callable, tuple] | None = None, command: list[str] | None = None):
        self.size, self.first = size, first
        self.command = command or [sys.executable, "-m", WORKER_MODULE]
        self.selector = selectors.DefaultSelector()
        self.kept: dict[str, bytes] = {}
        self.tags = itertools.count()
        self.failed_starts = 0
        self.sampled = 0.0
        self.workers: list[Worker] = []
        for _ in range(size):
            self.add()

    def add(self) -> Worker:
        """Start one more worker (from the main thread: a worker stops when the pool's process is gone)."""
        worker = Worker(self.command)
        worker.send(("path", list(sys.path)))  # what this process can import, the worker can
        self.selector.register(worker.answers, selectors.EVENT_READ, worker)
        self.workers.append(worker)
        if self.first is not None:
            worker.first = self.submit(worker, self.first[0], *self.first[1])
        return worker

    def keep(self, key: str, value: Any) -> None:
        """Send ``value`` to each worker once, before the first call whose arguments hold ``Kept(key)``."""
        self.kept[key] = cloudpickle.dumps(value)
        for worker in self.workers:
            worker.kept.discard(key)

    def submit(self, worker: Worker, function: Callable, *args: Any) -> Future:
        """Queue ``function(*args)`` on ``worker``; its Future holds an :class:`Answer`, the exception it raised,
        or :class:`WorkerLost`."""
        for arg in args:
            if isinstance(arg, Kept) and arg.key not in worker.kept:
                worker.send(("keep", arg.key, self.kept[arg.key]))
                worker.kept.add(arg.key)
        tag, future = next(self.tags), Future()
        if not worker.calls:
            worker.peak, worker.notes = 0, []
        worker.calls.append((tag, future))
        worker.send(("call", tag, function, args))
        return future

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if not w.calls]

    def pump(self, timeout: float) -> list[tuple[Worker, WorkerLost]]:
        """Read what the workers answered within ``timeout`` seconds; the workers lost meanwhile (already
        removed from the pool, their calls failed with WorkerLost)."""
        lost = []
        for key, _ in self.selector.select(timeout):
            worker = key.data
            try:
                data = os.read(worker.answers, 1 << 20)
            except OSError:
                data = b""
            if not data:
                lost.append((worker, self._lose(worker)))
                continue
            for raw in worker.frames.feed(data):
                self._receive(worker, pickle.loads(raw))
        if time.monotonic() - self.sampled >= SAMPLE_S:
            self.sampled = time.monotonic()
            for worker in self.workers:
                if worker.calls:
                    worker.sample()
        return lost

    def _receive(self, worker: Worker, message: tuple) -> None:
        if message[0] == "note":
            worker.notes.append(message[1])
            return
        _, tag, ok, value, peak = message
        done_tag, future = worker.calls.popleft()
        assert done_tag == tag, f"worker {worker.pid} answered call {tag}, expected {done_tag}"
        notes, worker.notes, worker.peak = tuple(worker.notes), [], 0
        if future is worker.first:
            self.failed_starts = 0
        if ok:
            future.set_result(Answer(value, peak, notes))
        else:
            future.set_exception(value)

    def _lose(self, worker: Worker) -> WorkerLost:
        self.selector.unregister(worker.answers)
        os.close(worker.answers)
        worker.outbox.put(None)
        self.workers.remove(worker)
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed its answers but lives on: it is of no use any more
            worker.process.kill()
            worker.process.wait()
        lost = WorkerLost(
            worker.pid, worker.process.returncode, worker.out_of_memory(), worker.peak or None, tuple(worker.notes)
        )
        if worker.first is not None and not worker.first.done():
            self.failed_starts += 1
        for _, future in worker.calls:
            future.set_exception(lost)
        worker.calls.clear()
        return lost

    def wait(self, futures: Iterable[Future]) -> None:
        """Pump until every one of ``futures`` is done (answered, raised, or its worker lost)."""
        futures = list(futures)
        while not all(f.done() for f in futures):
            for _, lost in self.pump(SAMPLE_S):
                log.warning("%s before it took a job; a new worker will take its place", lost)

    def map(
        self,
        tasks: Iterable[tuple[Any, Callable, tuple]],
        answered: Callable[[Any, Future], None],
        lost: Callable[[Any, WorkerLost], None],
    ) -> None:
        """Run each ``(key, function, args)`` on the next idle worker; ``answered(key, future)`` as each answers,
        ``lost(key, WorkerLost)`` when its worker dies first. A lost worker is replaced while tasks wait; after
        :data:`FAILED_STARTS` replacements in a row that die before their first answer, the waiting tasks are
        given up as lost too."""
        waiting, running = deque(tasks), {}
        try:
            while waiting or running:
                while waiting and len(self.workers) < self.size and self.failed_starts < FAILED_STARTS:
                    self.add()
                if waiting and not self.workers:  # no worker can start: the rest are lost like the last ones
                    error = WorkerLost(0, None, text=f"no worker could start ({FAILED_STARTS} in a row died first)")
                    while waiting:
                        lost(waiting.popleft()[0], error)
                    break
                for worker in self.idle():
                    if waiting:
                        key, function, args = waiting.popleft()
                        running[self.submit(worker, function, *args)] = (key, worker)
                for worker, error in self.pump(SAMPLE_S):
                    mine = [f for f, (_, w) in running.items() if w is worker]
                    for future in mine:
                        lost(running.pop(future)[0], error)
                    if not mine:
                        log.warning("%s between jobs; a new worker takes its place", error)
                for future in [f for f in running if f.done()]:
                    answered(running.pop(future)[0], future)
        except KeyboardInterrupt:  # Ctrl-C reached the workers too: their runs end KILLED; then they are ended
            self.settle(list(running), INTERRUPT_GRACE_S)
            self.close(stop=True)
            raise
        except BaseException:  # an error here: no worker goes on with a job nobody waits for
            self.close(stop=True)
            raise

    def settle(self, futures: list[Future], timeout: float) -> None:
        """Pump until ``futures`` are done, ``timeout`` seconds have passed or Ctrl-C comes again."""
        deadline = time.monotonic() + timeout
        try:
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                self.pump(SAMPLE_S)
        except KeyboardInterrupt:
            pass

    def close(self, stop: bool = False, timeout: float = 120) -> None:
        """End every worker: each finishes what it has (its runs' figures), then exits; ``stop``: their running
        calls stop as SIGTERM stops a run. Waits up to ``timeout`` seconds, then kills what is left."""
        for worker in self.workers:
            worker.outbox.put(None)  # its requests end: it exits once idle (lossbench.pool_worker)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if stop and worker.calls:
                worker.process.terminate()
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not exit within %.0f s of the sweep's end; killed", worker.pid, timeout)
                worker.process.kill()
                worker.process.wait()
            self.selector.unregister(worker.answers)
            os.close(worker.answers)
        self.workers.clear()
        self.selector.close()
