"""The GRPO maths, pure tensors in and out (as verl's core_algos): group advantages, the per-token policy loss with
its mixed-policy form, and TRL's loss normalisations. The trainer (grpo_trainer.py) only wires them in."""

from __future__ import annotations

import torch
from trl.trainer.utils import nanstd


def floored_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, group: int, floor: float
                       ) -> torch.Tensor:
    """(r - group mean) / max(group std, floor) for every row (TRL's weighted sum, nan-aware mean and std).

    With a floor, a group whose rewards differ by little (smoothed sentence BLEU of wrong answers always differs a
    little) does not get full-size advantages from noise; TRL divides by (std + 1e-4)."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group)
    std = nanstd(grouped, dim=1).repeat_interleave(group)
    return torch.nan_to_num((rewards - mean) / std.clamp(min=floor), nan=0.0)


def policy_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      off_policy: torch.Tensor, epsilon_low: float, epsilon_high: float,
                      shaping_gamma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token policy-gradient loss (B, T) and the on-policy clipped mask.

    On-policy tokens: PPO's clipped surrogate, -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), r = pi / pi_old.
    Off-policy rows (`off_policy` (B,) bool): behaviour probability 1, so r = pi_theta; never clipped (LUFFY), and
    with `shaping_gamma` the ratio becomes pi / (pi + gamma), which keeps learning from low-probability tokens.
    `advantages` is (B,) or (B, 1).
    """
    adv = advantages.view(-1, 1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    on_loss = -torch.min(ratio * adv, clipped * adv)
    prob = torch.exp(logps)
    shaped = prob if shaping_gamma is None else prob / (prob + shaping_gamma)
    off_loss = -shaped * adv
    off = off_policy.view(-1, 1).to(torch.bool)
    is_clipped = (((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))) & ~off
    return torch.where(off, off_loss, on_loss), is_clipped


def kl_penalty(ref_logps: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref), exp(ref - logp) - (ref - logp) - 1 (TRL's)."""
    return torch.exp(ref_logps - logps) - (ref_logps - logps) - 1


def normalised_loss(token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, accumulation: float,
                    num_items: torch.Tensor, num_processes: int, steps_per_generation: int,
                    max_completion_length: int, training: bool) -> torch.Tensor:
    """TRL's normalisations of the summed token loss, by loss_type (dapo: over every completion token of the
    generation batch, `num_items`, across processes and accumulation steps)."""
    if loss_type == "grpo":
        return ((token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return (token_loss * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return (token_loss * mask).sum() / (token_loss.size(0) * max_completion_length) / accumulation
    if loss_type == "dapo":
        normaliser = num_items.clamp(min=1.0) / num_processes
        if training:
            normaliser = normaliser * accumulation / steps_per_generation
        return (token_loss * mask).sum() / normaliser
    raise ValueError(f"unsupported loss_type {loss_type!r}: use dapo, grpo, bnpo or dr_grpo")


def off_policy_positions(n_local: int, process_index: int, num_generations: int, num_off_policy: int) -> list[bool]:
    """Which local rows get an off-policy sample: the last `num_off_policy` of every group of `num_generations`.

    TRL lays groups out contiguously over the global batch (process 0's rows first); its reward normalisation relies
    on that, and so does this.
    """
    start = process_index * n_local
    return [(start + i) % num_generations >= num_generations - num_off_policy for i in range(n_local)]
