"""Task heads for classification: the adaptation layers that sit on a pretrained body.

- `linear`: the model's own Hugging Face `*ForSequenceClassification` (BERT: a linear layer on the
  pooled [CLS] state; decoders: on the last non-pad token). Saved as a standard HF folder.
- `lstm`: a bidirectional LSTM over the token states; its two final states, concatenated, feed a linear layer.
- `transformer`: one pre-norm transformer encoder layer over the token states, masked mean pooling, linear.
- `mean`: masked mean of the token states, dropout, linear: the pooling sentence encoders (sentence-transformers'
  MiniLM/MPNet) were trained with, so their [CLS]/pooler state, which `linear` reads, is not what they learned.

`Classifier` joins a body and a head into one module whose forward returns logits. It deliberately has
no `save_pretrained`: the engine then checkpoints its whole state (body, LoRA and head) as one
safetensors file, so every kind of run (full, LoRA, any head) resumes and reloads the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genforge.errors import ConfigError


class LstmHead(nn.Module):
    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1, size: int = 0):
        super().__init__()
        self.lstm = nn.LSTM(hidden, size or hidden // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * (size or hidden // 2), num_labels)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(states, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: [2, B, size] = final forward state, final backward state
        return self.out(self.dropout(torch.cat([h[0], h[1]], dim=-1)))


def _heads_for(hidden: int) -> int:
    """The most attention heads (<= 8) that divide the hidden size."""
    return next(h for h in (8, 6, 4, 3, 2, 1) if hidden % h == 0)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


class TransformerHead(nn.Module):
    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1, heads: int = 0):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(hidden, heads or _heads_for(hidden), 4 * hidden, dropout,
                                                activation="gelu", batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(masked_mean(self.norm(self.layer(states, src_key_padding_mask=~mask.bool())), mask))


class MeanHead(nn.Module):
    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(masked_mean(states, mask)))


HEADS = {"lstm": LstmHead, "transformer": TransformerHead, "mean": MeanHead}


def build_head(kind: str, hidden: int, num_labels: int, dropout: float = 0.1) -> nn.Module:
    if kind not in HEADS:
        raise ConfigError(f"unknown head '{kind}' (known: linear, {', '.join(HEADS)})")
    return HEADS[kind](hidden, num_labels, dropout)


class Classifier(nn.Module):
    """body (+ head) -> logits [batch, labels]. Without a head the body is a *ForSequenceClassification.
    `typos`: the word recognizer its texts pass before tokenization (`genforge.finetune.typos`), if trained so."""

    def __init__(self, body: Any, head: nn.Module | None = None, typos: Any = None):
        super().__init__()
        self.body = body
        self.head = head
        self.typos = typos

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                hidden: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; with `hidden`, (logits, the body's last hidden states) for feature-space scores."""
        extra = {"output_hidden_states": True} if hidden and self.head is None else {}
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra)
        logits = out.logits if self.head is None else self.head(out.last_hidden_state, attention_mask)
        if not hidden:
            return logits
        return logits, out.hidden_states[-1] if self.head is None else out.last_hidden_state
