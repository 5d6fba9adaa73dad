"""Reading the pipeline and the named tables: [pipeline], [gates.*], [effects.*],
[agents.*] and [repos.*], each checked against the others (a transition's gates exist,
a stage's agent is defined, no loop of transitions without gates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from orch.config.defaults import DEFAULT_PROMPT, DEFAULTS, item, item_keys
from orch.config.pipeline import (
    EFFECT_TYPES,
    GATE_TYPES,
    Agent,
    Effect,
    Gate,
    Repo,
    Stage,
    Transition,
)
from orch.config.templates import PROMPT_VARIABLES, template_names
from orch.config.validator import Validator


class PipelineTables(NamedTuple):
    """[pipeline] (but max_retries, read with the plain sections) and the named tables."""

    table: dict[str, Any]  # [pipeline] as read (its defaults if it was no table)
    initial: str
    stages: dict[str, Stage]
    transitions: tuple[Transition, ...]
    gates: dict[str, Gate]
    effects: dict[str, Effect]
    agents: dict[str, Agent]


def read_pipeline(v: Validator, raw: dict[str, Any]) -> PipelineTables:
    pipe = v.section(raw, "pipeline")
    v.only(pipe, "pipeline", set(DEFAULTS["pipeline"]))
    stages: dict[str, Stage] = {}
    # A stages value that is no table is one problem; checking every reference to a stage
    # against it would bury that problem under a dozen echoes.
    v.stages_known = isinstance(pipe.get("stages"), dict)
    stage_tables = v.table(pipe, "pipeline", "stages")
    v.table_names("pipeline.stages", stage_tables)
    for name, st in stage_tables.items():
        key = f"pipeline.stages.{name}"
        st = v.is_table(st, key)
        v.only(st, key, item_keys("stage"))
        st = item("stage", st)
        stages[name] = Stage(
            name=name,
            agent=v.opt_string(st, key, "agent"),
            human=v.boolean(st, key, "human"),
            terminal=v.boolean(st, key, "terminal"),
        )
    gates = {
        name: _gate(v, name, v.is_table(g, f"gates.{name}")) for name, g in v.named(raw, "gates").items()
    }
    effects = {
        name: _effect(v, name, v.is_table(e, f"effects.{name}"))
        for name, e in v.named(raw, "effects").items()
    }
    agents = {
        name: _agent(v, name, v.is_table(a, f"agents.{name}")) for name, a in v.named(raw, "agents").items()
    }
    transitions = _transitions(v, pipe, stages, gates, effects)
    for st in stages.values():
        if st.agent and st.agent not in agents:
            import difflib  # only on this error path: start-up stays lean

            close = difflib.get_close_matches(st.agent, agents, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            v.error(
                f"pipeline.stages.{st.name}",
                "agent",
                f"unknown agent {st.agent!r} ({hint}define [agents.{st.agent}]; known: {', '.join(agents)})",
            )
    initial = v.string(pipe, "pipeline", "initial")
    if initial not in stages and v.stages_known:
        v.error("pipeline", "initial", f"{initial!r} is not in [pipeline.stages]")
    if not any(s.terminal for s in stages.values()) and v.stages_known:
        v.error("pipeline.stages", None, "no stage has terminal = true")
    return PipelineTables(pipe, initial, stages, tuple(transitions), gates, effects, agents)


def read_repos(v: Validator, raw: dict[str, Any], base_dir: Path) -> dict[str, Repo]:
    repos: dict[str, Repo] = {}
    for name, r in v.named(raw, "repos").items():
        key = f"repos.{name}"
        r = v.is_table(r, key)
        v.only(r, key, item_keys("repo"))
        r = item("repo", r)
        p = Path(v.string(r, key, "path")).expanduser()
        repos[name] = Repo(
            name=name,
            path=(p if p.is_absolute() else base_dir / p),
            default_branch=v.string(r, key, "default_branch"),
            ci=v.opt_string(r, key, "ci"),
            ci_timeout_s=v.number(r, key, "ci_timeout_s"),
            forge_repo=v.opt_string(r, key, "forge_repo"),
        )
    if not repos and (base_dir / ".git").exists():
        # With nothing configured, the directory orch runs in is the repository.
        repos["default"] = Repo(name="default", path=base_dir, **item("repo", {}))
    return repos


def _transitions(
    v: Validator,
    pipe: dict[str, Any],
    stages: dict[str, Stage],
    gates: dict[str, Gate],
    effects: dict[str, Effect],
) -> list[Transition]:
    transitions: list[Transition] = []
    tlist = pipe.get("transitions")
    if not isinstance(tlist, list):
        v.error("pipeline", "transitions", "expected an array of tables")
        return transitions
    for i, t in enumerate(tlist):
        key = f"pipeline.transitions[{i}]"
        t = v.is_table(t, key)
        v.only(t, key, item_keys("transition"))
        t = item("transition", t)
        tr = Transition(
            source=v.string(t, key, "from"),
            target=v.string(t, key, "to"),
            gates=v.names(t, key, "gates"),
            effects=v.names(t, key, "effects"),
            retry=v.boolean(t, key, "retry"),
            on_fail=v.opt_string(t, key, "on_fail"),
        )
        for field, s in (("from", tr.source), ("to", tr.target), ("on_fail", tr.on_fail)):
            if s is not None and s not in stages and v.stages_known:
                v.error(key, field, f"stage {s!r} is not in [pipeline.stages]")
        if tr.source in stages and stages[tr.source].terminal:
            v.error(key, "from", f"{tr.source!r} is a terminal stage: no transition may leave it")
        for g in tr.gates:
            if g not in gates:
                v.error(key, "gates", f"unknown gate {g!r} (define [gates.{g}])")
        for e in tr.effects:
            if e not in effects:
                v.error(key, "effects", f"unknown effect {e!r} (define [effects.{e}])")
        transitions.append(tr)
    _ungated_cycle(v, transitions)
    return transitions


def _ungated_cycle(v: Validator, transitions: list[Transition]) -> None:
    """A loop of transitions without gates would move a task one step per tick, forever."""
    edges: dict[str, list[tuple[int, str]]] = {}
    for i, t in enumerate(transitions):
        if not t.gates:
            edges.setdefault(t.source, []).append((i, t.target))
    done: set[str] = set()
    for start in sorted(edges):
        path: list[tuple[int, str]] = []  # (transition index, stage it leads to)
        on_path = {start: 0}
        stack = [iter(edges.get(start, []))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                if path:
                    on_path.pop(path.pop()[1], None)
                continue
            i, nxt = step
            if nxt in on_path:
                loop = [*path[on_path[nxt] :], (i, nxt)]
                names = " -> ".join([nxt, *(s for _, s in loop)])
                v.error(
                    f"pipeline.transitions[{loop[0][0]}]",
                    "gates",
                    f"a cycle with no gates ({names}) would move a task one step per tick "
                    "forever: give one of its transitions a gate",
                )
                return
            if nxt in done:
                continue
            path.append((i, nxt))
            on_path[nxt] = len(path)
            stack.append(iter(edges.get(nxt, [])))
        done.add(start)


def _gate(v: Validator, name: str, g: dict[str, Any]) -> Gate:
    key = f"gates.{name}"
    v.only(g, key, item_keys("gate"))
    g = item("gate", g)
    gtype = v.choice(g, key, "type", GATE_TYPES)
    gate = Gate(
        name=name,
        type=gtype,
        verdict=v.opt_string(g, key, "verdict"),
        bind_head=v.boolean(g, key, "bind_head"),
        command=v.opt_string(g, key, "command"),
        timeout_s=v.number(g, key, "timeout_s"),
        pass_env=v.variables(g, key, "pass_env"),
    )
    if g.get("type") not in GATE_TYPES:
        return gate  # its type is reported; checks that depend on it would only add noise
    if gtype in ("command", "monitor") and not gate.command:
        v.error(key, "command", f'required for type = "{gtype}"')
    if gtype == "verdict" and gate.verdict not in ("approve", "reject"):
        v.error(key, "verdict", 'expected "approve" or "reject"')
    return gate


def _effect(v: Validator, name: str, e: dict[str, Any]) -> Effect:
    key = f"effects.{name}"
    v.only(e, key, item_keys("effect"))
    e = item("effect", e)
    etype = v.choice(e, key, "type", EFFECT_TYPES)
    eff = Effect(
        name=name,
        type=etype,
        irreversible=v.boolean(e, key, "irreversible"),
        command=v.opt_string(e, key, "command"),
        probe=v.opt_string(e, key, "probe"),
        timeout_s=v.number(e, key, "timeout_s"),
        pass_env=v.variables(e, key, "pass_env"),
    )
    if etype == "command" and e.get("type") == "command" and not eff.command:
        v.error(key, "command", 'required for type = "command"')
    return eff


def _agent(v: Validator, name: str, a: dict[str, Any]) -> Agent:
    key = f"agents.{name}"
    v.only(a, key, item_keys("agent"))
    a = item("agent", a)
    agent = Agent(
        name=name,
        command=v.string(a, key, "command"),
        prompt=v.string(a, key, "prompt") or DEFAULT_PROMPT,  # an empty prompt is no prompt
        timeout_s=v.number(a, key, "timeout_s"),
        stall_timeout_s=v.number(a, key, "stall_timeout_s"),
        max_attempts=v.integer(a, key, "max_attempts", minimum=1, maximum=None),
        max_concurrency=v.integer(a, key, "max_concurrency", minimum=0, maximum=None),
        pass_env=v.variables(a, key, "pass_env"),
    )
    unknown = template_names(agent.prompt) - PROMPT_VARIABLES
    if unknown:
        v.error(
            key,
            "prompt",
            f"unknown variable ${sorted(unknown)[0]} (known: {', '.join(sorted(PROMPT_VARIABLES))}; "
            "write $$ for a literal $ before a name)",
        )
    return agent
