"""One worker process of lossbench's pool: ``python -m lossbench.pool_worker REQUESTS ANSWERS`` (two pipe fds).

It runs the calls its pool (lossbench.pool) sends, one at a time and in order, and answers each with what
it returned or raised and the call's peak resident memory. Besides:

- a job's run, once it exists, is told to the pool at once (lossbench.job.announce_run): if this process
  is killed, the sweep knows which run to end KILLED;
- the requests ending means the pool is done: the process finishes what it does in the background (the
  last runs' figures) and exits. If a call is still running then, the pool's process is gone (a kill -9 of
  the sweep): the call is stopped as SIGTERM stops a run (it ends KILLED with its checkpoint), and the
  process exits. So no worker trains on for a sweep that no longer exists.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import threading

from lossbench import job, run_figures
from lossbench.pool import Kept, frame, memory_of, read_frame, reset_peak


class Answers:
    """The answer pipe: whole frames, one writer at a time."""

    def __init__(self, fd: int):
        self.out, self.lock = os.fdopen(fd, "wb"), threading.Lock()

    def send(self, message) -> None:
        try:
            data = frame(message)
        except Exception as e:  # an answer that cannot be pickled: say what it was instead
            data = frame((*message[:2], False, RuntimeError(f"unpicklable answer: {type(e).__name__}: {e}"), None))
        with self.lock:
            self.out.write(data)
            self.out.flush()


def _tell(answers: Answers, run_id: str) -> None:
    try:
        answers.send(("note", run_id))
    except OSError:  # the pool's process is gone: this job is stopped as soon as the requests end (_read)
        pass


def _read(requests, inbox: queue.SimpleQueue, busy: threading.Event) -> None:
    """Requests into ``inbox`` (raw bytes: the main thread unpickles them); None when they end."""
    try:
        while True:
            inbox.put(read_frame(requests))
    except (EOFError, OSError):
        pass
    inbox.put(None)
    if busy.is_set():  # the pool's process is gone while a call runs: stop it as SIGTERM stops a run
        os.kill(os.getpid(), signal.SIGTERM)


def _peak(resettable: bool) -> int | None:
    """This process's high-water mark since the call started (None where it cannot be reset, or read)."""
    memory = memory_of(os.getpid()) if resettable else None
    return None if memory is None else memory[1]


def _call(function, args: tuple, kept: dict) -> tuple[bool, object]:
    args = tuple(kept[a.key] if isinstance(a, Kept) else a for a in args)
    try:
        return True, function(*args)
    except BaseException as e:  # KeyboardInterrupt too: the pool decides what comes next
        return False, e


def serve(requests_fd: int, answers_fd: int) -> None:
    for fd in (requests_fd, answers_fd):
        os.set_inheritable(fd, False)  # the processes a job starts (its drawing process) must not hold them
    answers, inbox, busy = Answers(answers_fd), queue.SimpleQueue(), threading.Event()
    job.on_run_opened(lambda run_id: _tell(answers, run_id))
    threading.Thread(
        target=_read, args=(os.fdopen(requests_fd, "rb"), inbox, busy), name="lossbench-requests", daemon=True
    ).start()
    kept: dict = {}
    while True:
        try:
            raw = inbox.get()
        except KeyboardInterrupt:  # Ctrl-C while idle: the sweep decides (it ends the requests)
            continue
        if raw is None:
            break
        message = pickle.loads(raw)
        if message[0] == "path":
            sys.path[:] = list(dict.fromkeys([*message[1], *sys.path]))
        elif message[0] == "keep":
            kept[message[1]] = pickle.loads(message[2])
        else:
            _, tag, function, args = message
            busy.set()
            resettable = reset_peak()
            ok, value = _call(function, args, kept)
            peak = _peak(resettable)
            reset_peak()  # between calls: what the pool samples next is the next call's
            busy.clear()  # before answering: once answered, the pool may end the requests
            try:
                answers.send(("answer", tag, ok, value, peak))
            except OSError:  # nobody reads the answers any more: the pool's process is gone
                break
    job.on_run_opened(None)
    run_figures.finish_pending()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
