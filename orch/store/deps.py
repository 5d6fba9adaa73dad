"""Dependencies between tasks, and the readiness they decide (`waiting_on`, `jobs.ready`)."""

from __future__ import annotations

from orch.store.audit import write_audit
from orch.store.backend import Database, Tx
from orch.store.models import Audit, Message, Task
from orch.store.outbox import notify_in
from orch.store.rows import records

# One dependency fewer to wait on (never below zero; portable, unlike SQLite's max(a, b)).
_ONE_LESS = (
    "UPDATE tasks SET waiting_on = CASE WHEN waiting_on > 0 THEN waiting_on - 1 ELSE 0 END WHERE id = ?"
)


def release_dependents(c: Tx, task_id: int, now: float, actor: str, told: Message) -> None:
    """The tasks waiting on `task_id` wait on one task fewer; those left waiting on none
    have their queued jobs made ready, and are told `told` (filled with their key)."""
    key = c.execute("SELECT key FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
    for dep in c.execute(
        "SELECT t.id, t.key, t.waiting_on FROM deps d JOIN tasks t ON t.id = d.task_id "
        "WHERE d.on_task_id = ?",
        (task_id,),
    ).fetchall():
        c.execute(
            _ONE_LESS,
            (dep["id"],),
        )
        if dep["waiting_on"] <= 1:
            c.execute("UPDATE jobs SET ready = 1 WHERE task_id = ? AND state = 'queued'", (dep["id"],))
            write_audit(c, Audit(dep["id"], actor, "released", {"by": key}), now)
            notify_in(
                c,
                told.key.format(waiter=dep["key"], key=key),
                dep["id"],
                told.text.format(waiter=dep["key"], key=key),
                now,
            )


def _path(c: Tx, start: int, goal: int) -> list[int] | None:
    """A dependency path start -> ... -> goal, or None (breadth-first over deps)."""
    if start == goal:
        return [start]
    parent: dict[int, int] = {start: start}
    frontier = [start]
    while frontier:
        nxt: list[int] = []
        for node in frontier:
            for (on,) in c.execute("SELECT on_task_id FROM deps WHERE task_id = ?", (node,)):
                if on in parent:
                    continue
                parent[on] = node
                if on == goal:
                    path = [on]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return list(reversed(path))
                nxt.append(on)
        frontier = nxt
    return None


class DepStore:
    db: Database

    def add_dep(
        self,
        task_id: int,
        on_task_id: int,
        *,
        unfinished: bool,
        now: float,
        audit: Audit,
        notification: tuple[str, str] | None,
    ) -> list[int] | None:
        """Declare task_id waits on on_task_id. Returns None, or the cycle it would close
        (as task ids, on_task_id first), in which case nothing is written."""
        with self.db.write() as c:
            cycle = _path(c, on_task_id, task_id)
            if cycle is not None:
                return cycle
            cur = c.execute(
                "INSERT INTO deps (task_id, on_task_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (task_id, on_task_id, now),
            )
            if cur.rowcount != 1:
                return None  # declared already
            if unfinished:
                c.execute("UPDATE tasks SET waiting_on = waiting_on + 1 WHERE id = ?", (task_id,))
                c.execute("UPDATE jobs SET ready = 0 WHERE task_id = ? AND state = 'queued'", (task_id,))
                if notification:
                    notify_in(c, notification[0], task_id, notification[1], now)
            write_audit(c, audit, now)
        return None

    def remove_dep(
        self, task_id: int, on_task_id: int, *, unfinished: bool, now: float, audit: Audit
    ) -> bool:
        with self.db.write() as c:
            if (
                c.execute(
                    "DELETE FROM deps WHERE task_id = ? AND on_task_id = ?", (task_id, on_task_id)
                ).rowcount
                != 1
            ):
                return False
            if unfinished:
                c.execute(
                    _ONE_LESS,
                    (task_id,),
                )
                c.execute(
                    "UPDATE jobs SET ready = 1 WHERE task_id = ? AND state = 'queued' AND "
                    "(SELECT waiting_on FROM tasks WHERE id = ?) = 0",
                    (task_id, task_id),
                )
            write_audit(c, audit, now)
        return True

    def deps_edges(self) -> list[tuple[int, int]]:
        return [(r[0], r[1]) for r in self.db.read("SELECT task_id, on_task_id FROM deps")]

    def deps_of(self, task_id: int) -> list[Task]:
        found = self.db.read(
            "SELECT t.* FROM deps d JOIN tasks t ON t.id = d.on_task_id WHERE d.task_id = ? ORDER BY t.id",
            (task_id,),
        )
        return records(Task, found)

    def dependents_of(self, task_id: int) -> list[Task]:
        found = self.db.read(
            "SELECT t.* FROM deps d JOIN tasks t ON t.id = d.task_id WHERE d.on_task_id = ? ORDER BY t.id",
            (task_id,),
        )
        return records(Task, found)

    def waiting_tasks(self) -> list[Task]:
        return records(Task, self.db.read("SELECT * FROM tasks WHERE waiting_on > 0 ORDER BY id"))

    def recount_waiting(self, finished_stages: tuple[str, ...], now: float) -> int:
        """Recompute waiting_on and job readiness from the deps table; returns rows fixed.

        The counts are maintained in every write that changes them; this repairs what a
        direct edit of the database (or a bug) left behind, and runs in the tick. Only
        tasks that have dependencies or a non-zero count are looked at, and a read finds
        the mismatches before any write lock is taken: an idle tick writes nothing.
        """
        marks = ",".join("?" * len(finished_stages)) or "''"
        unfinished = (
            "(SELECT count(*) FROM deps d JOIN tasks o ON o.id = d.on_task_id WHERE d.task_id = t.id "
            f"AND o.stage NOT IN ({marks}) AND o.stage != 'cancelled')"
        )
        find = (
            f"SELECT t.id, {unfinished} AS want FROM tasks t "
            "WHERE (t.waiting_on > 0 OR t.id IN (SELECT task_id FROM deps)) "
            f"AND t.waiting_on != {unfinished}"
        )
        wrong = self.db.read(find, (*finished_stages, *finished_stages))
        if not wrong:
            return 0
        with self.db.write() as c:
            fixed = 0
            for r in c.execute(find, (*finished_stages, *finished_stages)).fetchall():
                c.execute("UPDATE tasks SET waiting_on = ? WHERE id = ?", (r["want"], r["id"]))
                c.execute(
                    "UPDATE jobs SET ready = ? WHERE task_id = ? AND state = 'queued'",
                    (int(r["want"] == 0), r["id"]),
                )
                fixed += 1
        return fixed

    def unfinished_edges(self, finished_stages: tuple[str, ...]) -> list[tuple[int, int]]:
        """Dependency edges between tasks that are both unfinished: the only ones a cycle
        that blocks anything can run through."""
        marks = ",".join("?" * len(finished_stages)) or "''"
        found = self.db.read(
            "SELECT d.task_id, d.on_task_id FROM deps d JOIN tasks a ON a.id = d.task_id "
            "JOIN tasks b ON b.id = d.on_task_id "
            f"WHERE a.stage NOT IN ({marks}) AND a.stage != 'cancelled' "
            f"AND b.stage NOT IN ({marks}) AND b.stage != 'cancelled'",
            (*finished_stages, *finished_stages),
        )
        return [(r[0], r[1]) for r in found]
