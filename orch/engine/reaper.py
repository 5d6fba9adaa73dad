"""The reaper: what died, hangs or overstays is ended, and what it held is released.

- a running job whose owner (the runner process) is dead: its agent's process group is
  killed and its death confirmed, then the job is `reaped` and retried per policy;
- a job past its deadline (its runner should have ended it) or past the hard ceiling
  `reaper.max_running_s`, whatever else is recorded: the same;
- a lease whose owner is dead is reclaimed. After a reboot every owner of the previous
  boot is dead, so the first tick reclaims every old job and lease.

- an effect command (a deploy) running past `reaper.max_running_s`, whether its owner
  lives or died and left it running: its process group is killed and its death
  confirmed, audited, and a person is told. Its ledger row is left for the owner (which
  sees the command fail) or, if the owner is gone, for the next advance's probe.

Each reaped job force-releases its task's transition lease, is audited and alerts.
One job that cannot be reaped (its group survives SIGKILL) is counted and skipped.
"""

from __future__ import annotations

from typing import NamedTuple

from orch import log
from orch.engine import effects, jobs, lease_names
from orch.engine.runtime import Runtime
from orch.identity import host, is_alive
from orch.store import Audit


class ReapReport(NamedTuple):
    reaped: list[int]
    leases: list[str]
    errors: list[str]
    effects: list[str] = []  # noqa: RUF012 (never mutated)

    def as_dict(self) -> dict[str, object]:
        return self._asdict()


def reap(rt: Runtime) -> ReapReport:
    cfg, now = rt.config, rt.now()
    reaped: list[int] = []
    errors: list[str] = []
    for job in rt.store.jobs(states=("running",)):
        alive = job.owner is not None and is_alive(job.owner)
        why = None
        if not alive:
            why = "its runner died"
        elif job.started_at is not None and now - job.started_at > cfg.reaper.max_running_s:
            why = f"ran past reaper.max_running_s ({cfg.reaper.max_running_s:g}s)"
        elif job.deadline is not None and now > job.deadline + 2 * cfg.reaper.grace_s + 60:
            why = "ran past its deadline and its runner did not stop it"
        if why is None:
            continue
        here = job.owner is None or job.owner.host == host()
        if alive and not here:
            continue  # a live runner of another host (a shared store): its own host ends it
        # A process group id recorded on another host names a stranger here: never killed.
        if job.pgid and here and not rt.runner.kill_group(job.pgid, job.pgid_start):
            errors.append(f"job {job.id}: process group {job.pgid} survived SIGKILL")
            continue
        task = rt.store.get_task_by_id(job.task_id)
        assert task is not None
        if not rt.store.finish_job(
            job.id,
            state="reaped",
            exit_code=None,
            reason=why,
            now=now,
            head_sha=None,
            owner=job.owner,
            audit=Audit(task.id, rt.actor, "job_reaped", {"job": job.id, "agent": job.agent, "reason": why}),
        ):
            continue  # it ended on its own meanwhile
        reaped.append(job.id)
        log.warning("reaped", task=task.key, job=job.id, agent=job.agent, actor=rt.actor, reason=why)
        lease = lease_names.task(task.key)
        rt.store.release_lease(
            lease,
            owner=None,
            now=now,
            audit=Audit(task.id, rt.actor, "lease_released_by_reaper", {"lease": lease}),
        )
        rt.store.notify(
            f"reaped:{job.id}", task.id, f"{task.key}: reaped {job.agent} job {job.id}: {why}", now=now
        )
        jobs.retry(rt, job, task, why)
    killed = _reap_effects(rt, now, errors)
    released: list[str] = []
    for held in rt.store.list_leases():
        if is_alive(held.owner):
            continue
        name = held.name
        owner_key = lease_names.task_key(name)
        owner_task = rt.store.get_task(owner_key) if owner_key is not None else None
        audit_task = owner_task.id if owner_task else None
        if rt.store.clear_dead_lease(name, actor=rt.actor, now=now, audit_task=audit_task) is not None:
            released.append(name)
            log.warning("lease_reclaimed", lease=name, actor=rt.actor, dead_owner=held.owner.label())
    return ReapReport(reaped, released, errors, killed)


def _reap_effects(rt: Runtime, now: float, errors: list[str]) -> list[str]:
    killed: list[str] = []
    for row in rt.store.started_effects():
        proc = effects.process_of(row)
        if proc is None or not proc["alive"] or now - row.started_at <= rt.config.reaper.max_running_s:
            continue
        if row.owner.host != host():
            continue  # another host's process group: only that host can see and kill it
        task = rt.store.get_task_by_id(row.task_id)
        key = task.key if task else f"#{row.task_id}"
        name = f"{key}:{row.effect}"
        if not rt.runner.kill_group(proc["pgid"], proc["start_time"]):
            errors.append(f"effect {name}: process group {proc['pgid']} survived SIGKILL")
            continue
        why = f"ran past reaper.max_running_s ({rt.config.reaper.max_running_s:g}s)"
        killed.append(name)
        log.warning("effect_reaped", task=key, effect=row.effect, pid=proc["pid"], actor=rt.actor, reason=why)
        rt.store.audit(
            Audit(
                row.task_id,
                rt.actor,
                "effect_reaped",
                {"effect": row.effect, "pid": proc["pid"], "reason": why},
            ),
            now=now,
        )
        rt.store.notify(
            f"effect_reaped:{key}:{row.transition}:{row.effect}:{row.attempts}",
            row.task_id,
            f"{key}: killed effect {row.effect} (pid {proc['pid']}): {why}. "
            f"Check whether it happened, then `orch effect settle {key} {row.effect} --done|--redo`",
            now=now,
        )
    return killed
