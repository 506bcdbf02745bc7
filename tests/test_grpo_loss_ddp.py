"""One GRPO optimiser step on two processes equals the step on one process (and on one with two accumulated
micro-batches): the loss normalisations of grpo_loss.py under DDP's gradient averaging, with group advantages over
the whole batch (as TRL gathers the rewards), mixed-policy rows and completions of different lengths.

The full trainer on two processes is run by test_distributed.py; its rollouts are sampled per process, so its weights
cannot be compared with one process's. Here the batch is fixed, so they can. TRL's `bnpo` divides by each process's
own token count, so it does not pass this test (measured); the default is `dapo`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from steps.training.grpo_loss import floored_advantages, kl_penalty, normalised_loss, policy_token_loss

ROWS, GROUP, LENGTH, VOCAB = 8, 4, 6, 11
BETA = 0.02


def fixed_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, VOCAB, (ROWS, LENGTH), generator=g)
    lengths = torch.tensor([6, 2, 4, 5, 1, 6, 3, 4])
    mask = (torch.arange(LENGTH).unsqueeze(0) < lengths.unsqueeze(1)).float()
    rewards = torch.rand(ROWS, 1, generator=g)
    off_policy = torch.tensor([False, False, False, True, False, False, False, True])  # last row of each group
    ref_shift = 0.05 * torch.randn(ROWS, LENGTH, generator=g)
    return {"tokens": tokens, "mask": mask, "rewards": rewards, "off_policy": off_policy, "ref_shift": ref_shift}


def policy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(VOCAB, 8), nn.Tanh(), nn.Linear(8, VOCAB))


def token_logps(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens)
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def micro_loss(model: nn.Module, batch: dict[str, torch.Tensor], advantages: torch.Tensor, rows: slice,
               loss_type: str, processes: int, accumulation: int) -> torch.Tensor:
    logps = token_logps(model, batch["tokens"][rows])
    off = batch["off_policy"][rows]
    # old = the policy that sampled (this step's start); the reference a little apart, so the KL term has a gradient
    old, ref = logps.detach(), logps.detach() + batch["ref_shift"][rows]
    loss, _ = policy_token_loss(logps, old, advantages[rows], off, 0.2, 0.2)
    loss = loss + BETA * kl_penalty(ref, logps) * (~off).float().view(-1, 1)
    # num_items: every completion token of the generation batch, over processes and accumulation steps (TRL's)
    return normalised_loss(loss, batch["mask"][rows], loss_type, accumulation, batch["mask"].sum(), processes,
                           steps_per_generation=accumulation, max_completion_length=LENGTH, training=True)


def one_step(rank: int, processes: int, accumulation: int, loss_type: str, init_file: str) -> dict[str, torch.Tensor]:
    model = policy()
    if processes > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=processes)
        model = DistributedDataParallel(model)
    # SGD: its step is proportional to the gradient (Adam's first step is about lr * sign, blind to a wrong scale)
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = fixed_batch()
    advantages = floored_advantages(batch["rewards"], torch.ones(1), GROUP, floor=0.1)
    local = ROWS // processes
    micro = local // accumulation
    for i in range(accumulation):
        start = rank * local + i * micro
        micro_loss(model, batch, advantages, slice(start, start + micro), loss_type, processes,
                   accumulation).backward()
    optimiser.step()
    module = model.module if isinstance(model, DistributedDataParallel) else model
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def rank_main(rank: int, processes: int, loss_type: str, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    state = one_step(rank, processes, 1, loss_type, init_file)
    if rank == 0:
        torch.save(state, out)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_one_step_on_two_processes_equals_one_process(tmp_path: Path, loss_type: str) -> None:
    out = tmp_path / "two.pt"
    mp.spawn(rank_main, args=(2, loss_type, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    two = torch.load(out)
    one = one_step(0, 1, 1, loss_type, "")
    accumulated = one_step(0, 1, 2, loss_type, "")
    start = policy().state_dict()
    for name, weight in one.items():
        assert not torch.equal(weight, start[name]), name  # the step moved every tensor
        torch.testing.assert_close(two[name], weight, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(accumulated[name], weight, rtol=1e-5, atol=1e-6, msg=name)
