"""Order services by their `depends_on` graph, and run work over it as fast as the graph allows.

A service waits only for the affected services it depends on, directly or through services
that are not being recreated; independent services run at the same time, up to a bound.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

from .engines import Service
from .errors import ConfigError

__all__ = ["Graph", "Outcome", "critical_path", "dependents", "restart_graph", "run_in_order", "topological"]

Graph = Mapping[str, frozenset[str]]
Outcome = Literal["ok", "failed", "skipped"]  # what became of one node


def restart_graph(services: Mapping[str, Service], selected: Iterable[str]) -> dict[str, frozenset[str]]:
    """For each selected service, the selected services it must wait for."""
    chosen = set(selected)

    def reach(name: str, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for dep in services[name].depends_on if name in services else ():
            if dep in seen:
                continue
            seen.add(dep)
            found |= {dep} if dep in chosen else reach(dep, seen)
        return found

    return {name: frozenset(reach(name, {name})) for name in sorted(chosen)}


def dependents(services: Mapping[str, Service], selected: Iterable[str]) -> list[str]:
    """The services outside `selected` that depend on one of them, directly or through others.

    Recreating a service disturbs these: a healthcheck that calls it fails while it is replaced.
    """
    chosen = set(selected)
    found: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, service in services.items():
            if name not in chosen | found and service.depends_on & (chosen | found):
                found.add(name)
                grew = True
    return sorted(found)


def topological(graph: Graph) -> list[str]:
    """Dependencies first, ties broken by name; a cycle is a `ConfigError` that names it."""
    waiting = {name: set(deps) & set(graph) for name, deps in graph.items()}
    ready = [name for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    ordered = []
    while ready:
        name = heapq.heappop(ready)
        ordered.append(name)
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, other)
    if len(ordered) != len(graph):
        stuck = sorted(set(graph) - set(ordered))
        raise ConfigError(f"compose depends_on has a cycle among: {', '.join(stuck)}")
    return ordered


def critical_path(graph: Graph, cost: Mapping[str, float]) -> float:
    """The length of the longest chain of dependent work: the least time the whole graph can take."""
    finish: dict[str, float] = {}
    for name in topological(graph):
        finish[name] = cost[name] + max((finish[d] for d in graph[name] if d in finish), default=0.0)
    return max(finish.values(), default=0.0)


def run_in_order(
    graph: Graph,
    begin: Callable[[list[str]], Mapping[str, bool]],
    finish: Callable[[str], bool],
    parallel: int = 4,
) -> dict[str, Outcome]:
    """Work through the graph as fast as it allows, with at most `parallel` nodes in progress.

    Nodes whose dependencies have all succeeded are begun together, in one `begin` call (one
    compose invocation for a whole wave, not one process each), then each is finished on its
    own, so its dependents start the moment it is done. Returns each node's outcome: `ok`,
    `failed` (`begin` or `finish` said so), or `skipped` because something it depends on did
    not succeed. Nodes that do not depend on a failure still finish.
    """
    ordered = topological(graph)
    limit = max(1, parallel)
    outcome: dict[str, Outcome] = {}
    busy: set[str] = set()
    futures: dict[Future[Any], tuple[str, list[str]]] = {}
    nodes = set(graph)
    pool = ThreadPoolExecutor(max_workers=limit + 1)
    interrupted = False
    try:
        while len(outcome) < len(graph):
            batch: list[str] = []
            for name in ordered:
                if name in outcome or name in busy:
                    continue
                deps = graph[name] & nodes
                if any(outcome.get(d) in ("failed", "skipped") for d in deps):
                    outcome[name] = "skipped"
                elif all(outcome.get(d) == "ok" for d in deps) and len(busy) + len(batch) < limit:
                    batch.append(name)
            if batch:
                busy.update(batch)
                futures[pool.submit(begin, batch)] = ("begin", batch)
            if not futures:
                continue
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                step, names = futures.pop(future)
                if step == "begin":
                    begun = future.result()
                    for name in names:
                        if begun.get(name):
                            futures[pool.submit(finish, name)] = ("finish", [name])
                        else:
                            outcome[name] = "failed"
                            busy.discard(name)
                else:
                    outcome[names[0]] = "ok" if future.result() else "failed"
                    busy.discard(names[0])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the caller rolls back now; the waits in flight only watch
        interrupted = True
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
    return outcome
