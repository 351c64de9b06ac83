"""Rollback: the progress schedule's backtracking, on a parameter and an optimizer state checked by hand."""

import torch

from memft.training.rollback import DROP, MIN_BEST, Rollback


def _sgd_momentum():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    return p, opt


def _step(p, opt, grad):
    opt.zero_grad()
    p.grad = torch.tensor(grad)
    opt.step()


def test_a_collapse_restores_the_best_parameters_and_optimizer_state_and_halves_the_rate():
    p, opt = _sgd_momentum()
    rb = Rollback([p], opt)
    _step(p, opt, [1.0, 1.0])  # p = [0.9, 1.9], momentum buffer [1, 1]
    assert rb.observe(0.8) is False  # the best so far: copied
    _step(p, opt, [10.0, 10.0])  # p moves far, the buffer becomes [10.9, 10.9]
    assert rb.observe(0.8 - DROP - 0.01) is True  # a fall of more than DROP: back to the copy
    assert torch.allclose(p.detach(), torch.tensor([0.9, 1.9])) and (rb.factor, rb.rollbacks) == (0.5, 1)
    _step(p, opt, [0.0, 0.0])  # the restored momentum [1, 1] moves p by lr x 0.9 x 1, not by 0.9 x 10.9
    assert torch.allclose(p.detach(), torch.tensor([0.9 - 0.09, 1.9 - 0.09]))


def test_no_rollback_below_min_best_or_for_a_small_fall():
    p, opt = _sgd_momentum()
    rb = Rollback([p], opt)
    assert rb.observe(MIN_BEST - 0.05) is False and rb.observe(0.0) is False  # little to lose
    rb = Rollback([p], opt)
    assert rb.observe(0.9) is False and rb.observe(0.9 - DROP + 0.01) is False and rb.factor == 1.0


def test_rebase_makes_the_next_share_the_reference():
    p, opt = _sgd_momentum()
    rb = Rollback([p], opt)
    rb.observe(0.9)
    rb.rebase()  # exact statuses replace optimistic ones
    assert rb.observe(0.5) is False and rb.best == 0.5
