"""StatusBook: goals, bars and the fresh invariant, by hand-computed cases."""

from types import SimpleNamespace as S

from memft.training.status import StatusBook


def _st(prob, correct=None, loss=None):
    return S(prob=prob, correct=correct or [True] * len(prob), loss=loss or [0.0] * len(prob))


def test_goal_and_bar_are_read_from_the_latest_statistics():
    b = StatusBook(3, frozenset({2}), margin=0.5, bar=lambda m: 0.9)
    b.see_all({0: _st([0.6, 0.95]), 1: _st([0.95, 0.99], loss=[0.2, 0.4]), 2: _st([0.01], correct=[False])})
    assert b.ok == {0: True, 1: True, 2: True}  # record 2 is to forget: not recalled is its goal
    assert b.done == {0: False, 1: True, 2: True}  # 0.6 is above the margin, below the bar
    assert b.resting() == [1, 2] and b.active() == [0]
    assert round(b.mean_loss, 6) == round((0.0 + 0.3) / 2, 6)  # records to forget have no loss in the mean
    b.see(0, _st([0.4]))
    assert (b.ok[0], b.share) == (False, 2 / 3)


def test_only_a_full_pass_over_every_record_makes_stale_statuses_fresh():
    b = StatusBook(2, frozenset(), margin=0.5)
    b.see_all({0: _st([0.9]), 1: _st([0.9])})
    assert b.certified  # nothing has changed the parameters yet
    b.parameters_changed()
    assert not b.certified and b.all_ok
    b.full_pass(1)  # a pass over one record of two
    assert not b.certified
    b.full_pass(2)
    assert b.certified
    b.optimistic()  # restricted-head or greedy statistics
    assert not b.certified


def test_a_record_with_its_own_margin_is_judged_by_it():
    b = StatusBook(2, frozenset(), margin=0.5, bar=lambda m: m + 0.1, margins={1: 0.8})
    b.see_all({0: _st([0.7]), 1: _st([0.7])})
    assert b.ok == {0: True, 1: False} and b.done == {0: True, 1: False}
    assert b.bar == {0: 0.6, 1: 0.9}
