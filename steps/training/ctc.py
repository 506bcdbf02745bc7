"""The encoder's CTC objective of pretraining phase 1: the character alphabet, the encoder run on a batch's own length
(not the whole window), the loss on its pooled output, and greedy CTC decoding for the held-out WER."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from steps.evaluation.metrics import task_score
from steps.training.pretraining_clips import Clip, pad_features


def ctc_text(text: str) -> str:
    """A transcript as the CTC head spells it: NFKC, lowercase, apostrophes kept ("don't" is one spoken word), other
    punctuation removed, single spaces. The alphabet is built from it, so changing it changes the base model; WER is
    scored after steps.evaluation.metrics.normalise_text, like every WER the project reports."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


class CharVocab:
    """Characters of the CTC form of the transcripts (`ctc_text`); index 0 is the CTC blank."""

    def __init__(self, texts: Sequence[str]) -> None:
        chars = sorted({c for t in texts for c in ctc_text(t)})
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in ctc_text(text) if c in self.index]

    def greedy_decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        best = log_probs.argmax(-1).cpu().numpy()
        out = []
        for row, n in zip(best, lengths.tolist(), strict=True):
            chars, prev = [], 0
            for k in row[:n]:
                if k != prev and k != 0:
                    chars.append(self.chars[k - 1])
                prev = k
            out.append(" ".join("".join(chars).split()))
        return out


def pooled_lengths(frames: torch.Tensor) -> torch.Tensor:
    """Audio tokens per clip: Qwen2-Audio's conv (stride 2) then average pool (stride 2), as the processor counts."""
    conv = (frames - 1) // 2 + 1
    return (conv - 2) // 2 + 1


def encode_audio(encoder: nn.Module, features: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2AudioEncoder.forward on the batch's own length instead of the whole window; padded frames masked."""
    from transformers.masking_utils import create_bidirectional_mask

    x = F.gelu(encoder.conv1(features))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    steps = x.shape[1]
    x = x + encoder.embed_positions.weight[:steps]
    conv_lengths = (frames - 1) // 2 + 1
    valid = (torch.arange(steps)[None, :] < conv_lengths[:, None]).long()
    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x, attention_mask=valid)
    for layer in encoder.layers:
        out = layer(x, mask)
        x = out[0] if isinstance(out, tuple) else out
    x = encoder.avg_pooler(x.permute(0, 2, 1)).permute(0, 2, 1)
    return encoder.layer_norm(x), pooled_lengths(frames)


def ctc_loss(head: nn.Module, pooled: torch.Tensor, lengths: torch.Tensor, targets: Sequence[list[int]]
             ) -> torch.Tensor:
    log_probs = head(pooled).log_softmax(-1).transpose(0, 1)
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long)
    target_lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.long)
    return F.ctc_loss(log_probs, flat, lengths, target_lengths, blank=0, zero_infinity=True)


def ctc_wer(encoder: nn.Module, head: nn.Module, vocab: CharVocab, clips: Sequence[Clip]) -> float:
    with torch.no_grad():
        hyps = []
        for start in range(0, len(clips), 32):
            chunk = clips[start:start + 32]
            feats, frames = pad_features(chunk, None, None)
            pooled, lengths = encode_audio(encoder, feats, frames)
            hyps += vocab.greedy_decode(head(pooled).log_softmax(-1), lengths)
    return task_score("asr", hyps, [c.transcript for c in clips])
