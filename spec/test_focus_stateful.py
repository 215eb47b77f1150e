"""A session of interleaved append_tokens and focus_step calls with arbitrary scores keeps
every invariant after every step (contract §5, stateful property): the WC is valid (within
budget after each focus step), actions replay legally, only forced collapses break hysteresis,
and residency counts the steps since an entry was created."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from spec import strategies as S
from spec.implementation import mc


class FocusSession(RuleBasedStateMachine):
    """State: (cfg, T, wc) and, for every entry, the focus step that created it."""

    @initialize(case=S.cases())
    def start(self, case):
        self.cfg, self.T, self.wc = case
        self.step = 0
        self.born = [-1 - r for r in self.wc.residency.tolist()]
        self.log = [f"start {S.describe(self.cfg, self.T, self.wc)}"]

    @rule(n=st.integers(0, 40))
    def append(self, n):
        """New tokens arrive: LOD0 entries, residency 0, possibly over budget."""
        self.wc = mc.append_tokens(self.wc, self.T, n, self.cfg)
        self.T += n
        self.born += [self.step - 1] * n  # residency 0 at the next step's input
        self.log.append(f"append {n}")

    @rule(data=st.data())
    def focus(self, data):
        """A focus step on arbitrary scores: check it against the replay of its actions."""
        cfg, T, wc = self.cfg, self.T, self.wc
        scores = data.draw(S.focus_scores(len(wc)))
        out, actions = mc.focus_step(wc, scores, T, cfg)
        self.log.append(f"focus scores={scores.tolist()} -> {actions}")
        where = "\n".join(self.log)
        out.validate(cfg, T)
        entries, origin, records = S.replay_focus(cfg, T, wc, actions)
        assert entries == S.entries_of(out), f"actions do not replay to the output\n{where}"
        free = [r for r in records if not r["forced"]]
        assert len(free) <= cfg.max_actions, where
        for r in free:
            for i in r["acted_on"]:
                assert i is not None, f"acted twice on an entry in one step\n{where}"
                assert self.step - self.born[i] > cfg.min_residency, (
                    f"entry {S.entries_of(wc)[i]} created at step {self.born[i]} changed at "
                    f"step {self.step} (min_residency={cfg.min_residency})\n{where}")
        self.born = [self.step if o is None else self.born[o] for o in origin]
        self.wc = out
        self.step += 1

    @precondition(lambda self: hasattr(self, "wc"))
    @invariant()
    def residency_counts_steps_since_creation(self):
        expected = [self.step - 1 - b for b in self.born]
        assert self.wc.residency.tolist() == expected, (
            f"residency {self.wc.residency.tolist()} != {expected}\n" + "\n".join(self.log))

    @precondition(lambda self: hasattr(self, "wc"))
    @invariant()
    def valid_within_budget_after_each_focus_step(self):
        """Valid always, the budget included except right after an append."""
        try:
            self.wc.validate(self.cfg, self.T)
        except mc.BudgetError:
            assert self.log[-1].startswith("append"), "\n".join(self.log)


FocusSession.TestCase.settings = settings(
    settings(), max_examples=max(settings().max_examples // 2, 10), stateful_step_count=12
)
test_focus_session = FocusSession.TestCase
