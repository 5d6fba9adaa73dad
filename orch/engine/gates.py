"""Gates: named, read-only checks `(task) -> GateResult`.

A gate never writes. A verdict or a CI result counts only for the commit it was given
for (bind_head): when the branch head moves, the old verdict stops counting.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orch.config import Gate
from orch.engine.runtime import Runtime
from orch.store import Task


class GateResult(NamedTuple):
    name: str
    passed: bool
    reason: str
    evidence: dict[str, Any] = {}  # noqa: RUF012 (never mutated)
    error: bool = False
    degraded: bool = False  # a monitor says the deploy is unhealthy: block and tell a person

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate": self.name,
            "passed": self.passed,
            "reason": self.reason,
            "evidence": self.evidence,
            "error": self.error,
            "degraded": self.degraded,
        }


def evaluate(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    """Evaluate one gate; a failure inside it is a red gate with `error=True`, never a crash."""
    try:
        return _CHECKS[gate.type](rt, task, gate)
    except Exception as e:  # one broken gate must not look like a green one
        return GateResult(gate.name, False, f"gate error: {e}", error=True)


def evaluate_until_red(rt: Runtime, task: Task, names: tuple[str, ...]) -> list[GateResult]:
    """The transition's gates in order, stopping at the first red one: the reconciler looks
    at many quiet tasks, and each gate may cost a subprocess or a request."""
    out = []
    for name in names:
        out.append(evaluate(rt, task, rt.config.gates[name]))
        if not out[-1].passed:
            break
    return out


def _verdict(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    v = rt.store.latest_verdict(task.id, task.version)
    human = rt.config.pipeline.stages[task.stage].human
    if v is None:
        who = "a person" if human else "a verdict"
        return GateResult(gate.name, False, f"waiting for {who} ({gate.verdict})")
    ev: dict[str, Any] = {"verdict": v.verdict, "by": v.actor, "sha": v.sha}
    if human and v.actor.startswith("agent:"):
        return GateResult(gate.name, False, "an agent cannot pass a human gate", ev)
    if gate.bind_head:
        head = rt.forge.branch_head(task)
        ev["head"] = head
        if v.sha != head:
            return GateResult(
                gate.name, False, f"verdict was for {_short(v.sha)}, head is {_short(head)}", ev
            )
    if v.verdict != gate.verdict:
        return GateResult(gate.name, False, f"verdict is {v.verdict}", ev)
    return GateResult(gate.name, True, f"{v.verdict} by {v.actor}", ev)


def _agent(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    agent = rt.config.pipeline.stages[task.stage].agent
    if agent is None:
        return GateResult(gate.name, True, "no agent in this stage")
    job = rt.store.latest_job(task.id, agent, task.version)
    if job is None:
        return GateResult(gate.name, False, f"no {agent} job yet")
    ev = {"job": job.id, "state": job.state, "exit_code": job.exit_code}
    if job.state != "succeeded":
        return GateResult(gate.name, False, f"{agent} job {job.id} is {job.state}", ev)
    return GateResult(gate.name, True, f"{agent} job {job.id} succeeded", ev)


def _branch(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    head = rt.forge.branch_head(task)
    ev = {"branch": rt.forge.branch(task), "head": head}
    if head is None:
        return GateResult(gate.name, False, "branch not pushed", ev)
    if not rt.forge.branch_ahead(task):
        return GateResult(gate.name, False, "branch has no commits beyond the default branch", ev)
    return GateResult(gate.name, True, f"pushed at {_short(head)}", ev)


def _ci(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    head = rt.forge.branch_head(task)
    if head is None:
        return GateResult(gate.name, False, "no branch head to test")
    state, ev = rt.forge.ci_status(task, head)
    ev = {**ev, "sha": head, "state": state}
    if state == "success":
        return GateResult(gate.name, True, f"ci green at {_short(head)}", ev)
    return GateResult(gate.name, False, f"ci is {state or 'not reported'} at {_short(head)}", ev)


def _command(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    from orch.engine import env

    assert gate.command is not None
    log = rt.config.log_dir / f"gate-{task.key}-{gate.name}.log"
    out = env.run(rt, task, gate.command, log_path=log, timeout_s=gate.timeout_s, pass_env=gate.pass_env)
    ev = {"exit_code": out.exit_code, "log": str(log)}
    if out.exit_code == 0:
        return GateResult(gate.name, True, "command passed", ev)
    if out.exit_code == 1:
        return GateResult(gate.name, False, "command says not yet", ev)
    return GateResult(gate.name, False, f"command error: {out.reason}", ev, error=True)


def _monitor(rt: Runtime, task: Task, gate: Gate) -> GateResult:
    """Post-deploy health: exit 0 healthy, 1 not yet (still watching), 2 degraded.

    For an HTTP health URL: command = "curl -fsS --max-time 5 https://app/healthz || exit 2".
    """
    out = _command(rt, task, gate)
    code = out.evidence.get("exit_code")
    if code == 2:
        return GateResult(gate.name, False, "monitor says DEGRADED", out.evidence, degraded=True)
    if code == 0:
        return GateResult(gate.name, True, "monitor says healthy", out.evidence)
    if code == 1:
        return GateResult(gate.name, False, "monitor is still watching", out.evidence)
    return out


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "none"


_CHECKS = {
    "verdict": _verdict,
    "agent": _agent,
    "branch": _branch,
    "ci": _ci,
    "command": _command,
    "monitor": _monitor,
}
