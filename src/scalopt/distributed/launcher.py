"""``launch(fn, world_size, *args)``: N real gloo processes on loopback, one ``TorchComm`` each.

    def train(comm, steps):                     # module level: it is pickled to the processes
        torch.manual_seed(1234 + comm.rank)     # per-rank data_seed; init_seed shared by all ranks
        ...
        return final_loss

    losses = launch(train, 4, 100)              # the ranks' return values, in rank order

Each rank is a fresh process (``start_method="forkserver"`` where available, else ``"spawn"``:
never ``fork``, which copies a parent's threads; scripts need an ``if __name__ == "__main__":``
guard). The fork server preloads torch and scalopt once per parent process, so later launches
start in milliseconds. Each rank has torch pinned to ``threads`` intra-op threads (default 1),
``GLOO_SOCKET_IFNAME=lo``, a process group over a TCPStore that the parent hosts on a free
loopback port (no port races), and the collective timeout ``timeout_s``.
Return values travel back pickled (tensors included).

Failures never hang: a rank that raises, dies (killed, ``os._exit``) or hangs makes the others
fail in their next collective (``CommError``, at once for a dead peer, after ``timeout_s`` for a
hung one); the parent waits at most ``grace_s`` more for the rest, terminates what is left and raises
``LaunchError`` naming the rank that failed first (a rank failing for a reason other than a peer's
failure), with its traceback, and how every other rank ended. Ranks that all hang outside a
collective fail no peer; ``deadline_s`` (default 24 hours; ``None``: no limit) bounds the whole
launch: past it every rank is terminated and ``LaunchError`` says which were still running.

Ranks die with the process that launched them: on Linux each sets ``PR_SET_PDEATHSIG`` (SIGKILL
when its parent, the fork server or the launcher, exits) and every rank runs a watchdog thread
that kills it within a second once the launching process is gone (any POSIX system). A killed
launcher therefore leaves no rank training on its own.

The same function runs with logical workers in one process: ``SimComm(world_size).run(fn, *args)``.
Under ``torchrun``, call ``torch.distributed.init_process_group("gloo")`` and use ``TorchComm()``.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from scalopt.core.comm import NetworkModel
from scalopt.core.validate import check_int, check_positive


class LaunchError(RuntimeError):
    """A launched rank raised, died or hung; the message names it and carries its traceback."""

    def __init__(self, message: str, rank: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
DEFAULT_DEADLINE_S = 24 * 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(launcher_pid: int, poll_s: float = 0.5) -> None:
    """Make this process die when ``launcher_pid`` (or its own parent) exits: ``PR_SET_PDEATHSIG``
    on Linux, and a watchdog thread everywhere (it also covers the fork server's children)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still applies

    def watch() -> None:
        while True:
            if os.getppid() != parent or not _alive(launcher_pid):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(poll_s)

    if os.getppid() != parent or not _alive(launcher_pid):  # it died before we got here
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="scalopt-parent-watchdog", daemon=True).start()


def _worker(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    timeout_s: float,
    delay: NetworkModel | None,
    threads: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
    launcher_pid: int,
) -> None:
    die_with_parent(launcher_pid)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    import torch
    import torch.distributed as dist

    from scalopt.distributed.torch_comm import CommError, TorchComm

    torch.set_num_threads(threads)
    try:
        timeout = timedelta(seconds=timeout_s)
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        comm = TorchComm(delay=delay, timeout_s=timeout_s)
        payload = ("ok", rank, pickle.dumps(fn(comm, *args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        peer = isinstance(exc, CommError)
        payload = ("error", rank, f"{type(exc).__name__}: {exc}", traceback.format_exc(), peer)
    results.put(payload)
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - teardown after a failure is best effort
        pass


def process_context(start_method: str | None = None) -> Any:
    """A multiprocessing context that never forks the caller (forkserver preloading torch, or spawn)."""
    methods = mp.get_all_start_methods()
    if start_method is None:
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    if start_method not in ("forkserver", "spawn") or start_method not in methods:
        allowed = [m for m in ("forkserver", "spawn") if m in methods]
        raise ValueError(f"start_method must be one of {allowed}, got {start_method!r}")
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        # torch.optim imports torch._dynamo (~800 modules, seconds) on the first step: preload it too
        ctx.set_forkserver_preload(["torch", "torch._dynamo", "scalopt.distributed"])
    return ctx


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "was still running"
    if code < 0:
        try:
            return f"died (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f"died (signal {-code})"
    return f"exited with code {code} without returning a result"


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout_s: float = 60.0,
    grace_s: float = 10.0,
    delay: NetworkModel | None = None,
    backend: str = "gloo",
    threads: int = 1,
    start_method: str | None = None,
    deadline_s: float | None = DEFAULT_DEADLINE_S,
) -> list[Any]:
    """Run ``fn(comm, *args)`` on ``world_size`` gloo processes; their return values in rank order.

    ``timeout_s`` bounds each collective, ``grace_s`` the wait for the others after a rank failed,
    ``deadline_s`` the whole launch (``None``: unbounded)."""
    import torch.distributed as dist

    check_int("world_size", world_size, minimum=1)
    check_positive("timeout_s", timeout_s)
    check_positive("grace_s", grace_s)
    check_int("threads", threads, minimum=1)
    if deadline_s is not None:
        check_positive("deadline_s", deadline_s)
    if delay is not None and not isinstance(delay, NetworkModel):
        raise ValueError(f"delay must be a NetworkModel or None, got {delay!r}")
    ctx = process_context(start_method)
    store = dist.TCPStore(
        "127.0.0.1",
        0,
        world_size + 1,
        is_master=True,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
    )
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                r,
                world_size,
                store.port,
                backend,
                timeout_s,
                delay,
                threads,
                fn,
                args,
                results,
                os.getpid(),
            ),
            name=f"scalopt-rank{r}",
            daemon=True,
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    try:
        return supervise(procs, results, grace_s, deadline_s=deadline_s)
    finally:
        del store


def supervise(
    procs: list[Any], results: Any, grace_s: float, what: str = "rank", deadline_s: float | None = None
) -> list[Any]:
    """Collect ``("ok", rank, pickled)`` / ``("error", rank, summary, traceback, peer)`` messages from
    ``procs``; return the results in rank order, or terminate everything and raise ``LaunchError``
    (also once ``deadline_s`` has passed with ranks still running)."""
    world_size = len(procs)
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    overdue = False
    ok: dict[int, Any] = {}
    failed: dict[int, tuple[str, str, bool]] = {}  # rank -> (summary, traceback, caused by a peer)
    first_failure: float | None = None
    exited_at: dict[int, float] = {}
    try:
        while len(ok) + len(failed) < world_size:
            try:
                msg = results.get(timeout=0.1)
            except queue_mod.Empty:
                msg = None
            now = time.monotonic()
            if msg is not None:
                if msg[0] == "ok":
                    ok[msg[1]] = pickle.loads(msg[2])
                else:
                    failed[msg[1]] = (msg[2], msg[3], msg[4])
                    first_failure = first_failure or now
                continue
            for r, p in enumerate(procs):
                if r in ok or r in failed or p.exitcode is None:
                    continue
                exited_at.setdefault(r, now)
                # a clean exit posts its result first; give the queue a moment before calling it lost
                if p.exitcode != 0 or now - exited_at[r] > 5.0:
                    failed[r] = (_exit_reason(p.exitcode), "", False)
                    first_failure = first_failure or now
            if first_failure is not None and now - first_failure > grace_s:
                break
            if deadline is not None and now > deadline:
                overdue = True
                break
    finally:
        if len(ok) == world_size:  # every rank returned: let each finish its own teardown (a rank
            end = time.monotonic() + grace_s  # terminated mid-exit leaks its semaphores)
            for p in procs:
                p.join(timeout=max(end - time.monotonic(), 0.0))
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
    if not failed and len(ok) == world_size:
        return [ok[r] for r in range(world_size)]
    # the culprit: a rank that failed for its own reason, else one still running (hung), else any
    hung = [r for r in range(world_size) if r not in ok and r not in failed]
    own = [r for r in sorted(failed) if not failed[r][2]]
    culprit = own[0] if own else (hung[0] if hung else min(failed))
    if culprit in failed:
        summary, tb, _ = failed[culprit]
        lines = [f"{what} {culprit} of {world_size} {'raised ' if tb else ''}{summary}"]
    elif overdue and not failed:
        tb = ""
        running = ", ".join(str(r) for r in hung)
        lines = [
            f"{what} {culprit} of {world_size} hung: the launch passed its deadline of {deadline_s:g} s "
            f"with {what}s {running} still running (terminated; raise deadline_s for longer work)"
        ]
    else:
        tb = ""
        lines = [f"{what} {culprit} of {world_size} hung (terminated after the other ranks failed)"]
    for r in range(world_size):
        if r == culprit:
            continue
        if r in ok:
            lines.append(f"  {what} {r}: returned")
        elif r in failed:
            lines.append(f"  {what} {r}: {failed[r][0].splitlines()[0][:300]}")
        else:
            lines.append(f"  {what} {r}: still running, terminated")
    if tb:
        lines.append(f"--- traceback of {what} {culprit} ---\n{tb.rstrip()}")
    raise LaunchError("\n".join(lines), rank=culprit)
