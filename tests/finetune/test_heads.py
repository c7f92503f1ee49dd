import pytest
import torch

from genforge.errors import ConfigError
from genforge.finetune.heads import Classifier, LstmHead, MeanHead, TransformerHead, build_head


@pytest.mark.parametrize("cls", [LstmHead, TransformerHead, MeanHead])
def test_heads_ignore_padding(cls):
    torch.manual_seed(0)
    head = cls(24, 3, dropout=0.0).eval()
    states = torch.randn(2, 5, 24)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    padded = torch.cat([states, torch.randn(2, 4, 24)], dim=1)  # 4 more (garbage) positions, masked
    padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, b = head(states, mask), head(padded, padded_mask)
        alone = head(states[1:, :3], mask[1:, :3])
    assert a.shape == (2, 3)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[1:], alone, atol=1e-5)  # a row does not depend on its batch-mates' length


def test_mean_head_is_a_linear_map_of_the_masked_mean():
    head = MeanHead(4, 2, dropout=0.5).eval()
    states = torch.tensor([[[1.0, 2, 3, 4], [3, 2, 1, 0], [9, 9, 9, 9]]])
    with torch.no_grad():
        logits = head(states, torch.tensor([[1, 1, 0]]))
    assert torch.allclose(logits, head.out(torch.tensor([[2.0, 2, 2, 2]])))


def test_build_head_and_classifier_forward():
    with pytest.raises(ConfigError, match="unknown head 'cnn'"):
        build_head("cnn", 16, 2)

    class Body(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"last_hidden_state": torch.nn.functional.one_hot(input_ids, 16).float()})

    model = Classifier(Body(), build_head("transformer", 16, 4))
    logits = model(torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long))
    assert logits.shape == (1, 4)
    logits.sum().backward()
    assert model.head.out.weight.grad is not None
