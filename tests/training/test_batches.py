"""BatchPolicy: what the active set trains and when it checks, with a stand-in checker (no model)."""

from types import SimpleNamespace as S

from memft.config import TrainConfig
from memft.training.batches import BatchPolicy, CheckBudget
from memft.training.status import StatusBook, Work


class _Check:
    def __init__(self, budget):
        self.budget, self.calls = budget, []

    def __call__(self, indices=None, full=True):
        self.calls.append((None if indices is None else list(indices), full))


def _book(probs, bar=0.8):
    b = StatusBook(len(probs), frozenset(), margin=0.5, bar=lambda m: bar)
    b.see_all({i: S(prob=[p], correct=[True], loss=[0.0]) for i, p in enumerate(probs)})
    return b


def test_the_active_set_trains_only_records_below_the_bar():
    book, work = _book([0.6, 0.95, 0.7, 0.99]), Work()
    check = _Check(CheckBudget(4))
    policy = BatchPolicy(TrainConfig(batch_size=2, replay=0.0), book, check, work, active=True, state={})
    book.parameters_changed()
    assert sorted(policy.draw(0, last=False)) in ([0, 2],) and check.calls == []
    assert policy.draw(1, last=True) == []  # nothing is drawn at the end of the budget


def test_when_every_record_rests_it_consolidates_the_nearest_until_the_budget_allows_a_full_check():
    book, work = _book([0.85, 0.95, 0.81, 0.99]), Work()
    budget = CheckBudget(4)  # a full check needs ceil(4 / 3) = 2 trained record passes
    check = _Check(budget)
    policy = BatchPolicy(TrainConfig(batch_size=3, replay=0.0), book, check, work, active=True, state={})
    book.parameters_changed()  # stale: every record rests by statuses that may no longer hold
    assert sorted(policy.draw(0, last=False)) == [0, 2]  # the 2 nearest the bar, as many as the budget still needs
    assert check.calls == []
    budget.trained(2)
    policy.draw(1, last=False)  # the first epoch was those 2: the next draw starts a new one
    assert check.calls == [(None, True)]  # every record checked once allowed
