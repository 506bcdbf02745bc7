"""A recorded stand-in for vLLM's LLM engine: TRL's real colocate generation code runs around it on CPU."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

FAKE_LOGPROB = -5.0  # what the fake engine reports for every sampled token
WORDS = ("die katze", "der hund sitzt", "ein buch", "wir lesen heute")


class FakeLLM:
    """Records each `generate` call; answers request j with WORDS[j % 4] + EOS, every token at FAKE_LOGPROB."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tok, self.max_tokens = tokenizer, max_tokens
        self.calls: list[tuple[list[dict[str, Any]], Any]] = []

    def completion(self, j: int) -> list[int]:
        ids = self.tok(WORDS[j % len(WORDS)], add_special_tokens=False)["input_ids"][: self.max_tokens - 1]
        return [*ids, self.tok.eos_token_id]

    def generate(self, prompts: list[dict[str, Any]], sampling_params: Any = None, use_tqdm: bool = True) -> list:
        self.calls.append(([dict(p) for p in prompts], sampling_params))
        outputs = []
        for j, request in enumerate(prompts):
            ids = self.completion(j)
            logprobs = [{t: SimpleNamespace(logprob=FAKE_LOGPROB, rank=1, decoded_token="")} for t in ids]
            outputs.append(SimpleNamespace(prompt_token_ids=request["prompt_token_ids"],
                                           outputs=[SimpleNamespace(token_ids=ids, logprobs=logprobs)]))
        return outputs
