"""steps/training/grpo_loss.py: the GRPO maths on hand-computed tensors."""

from __future__ import annotations

import torch

from steps.training.grpo_loss import floored_advantages, off_policy_positions, policy_token_loss


def test_on_policy_tokens_are_clipped_and_off_policy_tokens_are_not() -> None:
    # Row 0 on-policy, row 1 off-policy; both with probability ratios far above 1 + eps and a positive advantage.
    old = torch.log(torch.tensor([[0.1, 0.1], [1.0, 1.0]]))
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]])).requires_grad_()
    adv = torch.tensor([1.0, 1.0])
    loss, clipped = policy_token_loss(logps, old, adv, torch.tensor([False, True]), 0.2, 0.2)
    loss.sum().backward()
    assert clipped[0].all() and not clipped[1].any()
    assert torch.all(logps.grad[0] == 0)  # clipped: no gradient
    # Off-policy: loss = -pi * A, so d/dlogp = -pi = -0.5 (behaviour probability 1, no clip).
    assert torch.allclose(logps.grad[1], torch.tensor([-0.5, -0.5]))
    assert torch.allclose(loss[1].detach(), torch.tensor([-0.5, -0.5]))


def test_std_floor_keeps_noise_level_reward_differences_small() -> None:
    rewards = torch.tensor([[0.10], [0.11], [0.12], [0.13], [0.0], [1.0], [0.0], [1.0]])  # two groups of 4
    adv = floored_advantages(rewards, torch.tensor([1.0]), group=4, floor=1 / 3)
    noise, signal = adv[:4], adv[4:]
    assert torch.allclose(noise, (rewards[:4, 0] - 0.115) * 3)  # std 0.013 < floor: divided by 1/3, not 0.013
    assert noise.abs().max() < 0.05
    std = rewards[4:, 0].std()  # 0.577 > floor: plain group normalisation
    assert torch.allclose(signal, (rewards[4:, 0] - 0.5) / std)
    unscorable = torch.tensor([[float("nan")], [0.2], [0.4], [0.6]])
    assert floored_advantages(unscorable, torch.tensor([1.0]), 4, 0.1)[0] == 0


def test_policy_shaping_rescales_off_policy_ratios() -> None:
    logps = torch.log(torch.tensor([[0.1]]))
    loss, _ = policy_token_loss(logps, logps, torch.tensor([2.0]), torch.tensor([True]), 0.2, 0.2, shaping_gamma=0.1)
    assert torch.allclose(loss, torch.tensor([[-2.0 * 0.1 / (0.1 + 0.1)]]))


def test_on_policy_loss_matches_ppo_surrogate_inside_the_clip_range() -> None:
    logps = torch.log(torch.tensor([[0.5]]))
    old = torch.log(torch.tensor([[0.45]]))
    loss, clipped = policy_token_loss(logps, old, torch.tensor([-1.5]), torch.tensor([False]), 0.2, 0.2)
    assert not clipped.any()
    assert torch.allclose(loss, torch.tensor([[1.5 * 0.5 / 0.45]]))


def test_off_policy_positions_are_the_last_k_of_every_group_across_processes() -> None:
    assert off_policy_positions(8, 0, 4, 1) == [False, False, False, True] * 2
    # 2 processes, 6 rows each, groups of 4 spanning the boundary: global rows 3, 7, 11 are off-policy.
    assert [i for i, off in enumerate(off_policy_positions(6, 0, 4, 1)) if off] == [3]
    assert [i for i, off in enumerate(off_policy_positions(6, 1, 4, 1)) if off] == [1, 5]
    assert off_policy_positions(4, 0, 4, 0) == [False] * 4
