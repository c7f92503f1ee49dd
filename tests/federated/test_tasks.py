"""One client's round on the engine, without Flower: pretraining, SFT with LoRA, FedProx's pull."""

import pytest
import torch
import torch.nn.functional as F

from genforge.federated.client import Proximal, Silo, local_round, round_objective
from genforge.federated.config import FederatedPretrainConfig, FederatedSftConfig
from genforge.federated.partition import split
from genforge.federated.tasks import build_task, trainable


def distance(a, b):
    return sum(((a[k] - b[k]) ** 2).sum().item() for k in a) ** 0.5


def test_pretrain_round_trains_the_silo_and_fedprox_pulls_towards_the_global_model(tmp_path, packed):
    cfg = FederatedPretrainConfig(data=packed, out=tmp_path / "o", preset="tiny", batch_size=4, seq_len=32,
                                  bf16=False, clients=2, rounds=3, local_steps=4, lr=3e-3)
    task = build_task("pretrain", cfg)
    rows = split("iid", task.n, 2, alpha=1.0, seed=0)[0]
    start = {k: v.clone() for k, v in trainable(task.model).items()}
    assert len(start) == len(list(task.model.parameters()))  # full training: every tensor travels
    before = task.score()["loss"]
    free, metrics = local_round(Silo(task, rows, tmp_path / "c0"), start, 1, mu=0.0)
    assert metrics["steps"] == 4 and metrics["examples"] == len(rows)
    task.model.eval()
    with torch.no_grad():
        assert task.score()["loss"] < before
    pulled, _ = local_round(Silo(task, rows, tmp_path / "c0"), start, 1, mu=100.0)
    assert 0 < distance(pulled, start) < distance(free, start)


def test_two_clients_on_the_same_token_folder_read_different_windows_each_reproducibly(tmp_path, packed):
    """Silos given the same packed folder used to draw the same windows in the same order (seed without client)."""
    cfg = FederatedPretrainConfig(data=packed, out=tmp_path / "o", preset="tiny", batch_size=4, seq_len=32,
                                  bf16=False, clients=2, partition="by-file", client_data=[packed, packed])
    task = build_task("pretrain", cfg, packed)
    rows = list(range(task.n))

    def order(client):
        batches = task.batches_for(rows, client)
        return [batches.batch(step, 0)["input_ids"] for step in range(3)]

    first, second, again = order(0), order(1), order(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(second, again, strict=True))


def test_local_epochs_give_each_silo_steps_in_proportion_to_its_size(tmp_path, packed):
    from genforge.federated.client import local_steps

    cfg = FederatedPretrainConfig(data=packed, out=tmp_path / "o", preset="tiny", batch_size=4, seq_len=32,
                                  bf16=False, clients=2, rounds=3, local_epochs=0.5, lr=3e-3)
    assert [local_steps(cfg, n) for n in (40, 400, 3)] == [5, 50, 1]  # at least one step for a tiny silo
    task = build_task("pretrain", cfg)
    rows = list(range(min(task.n, 24)))
    _, metrics = local_round(Silo(task, rows, tmp_path / "c0"), trainable(task.model), 1, mu=0.0)
    assert metrics["steps"] == round(0.5 * len(rows) / 4)
    fixed = FederatedPretrainConfig(data=packed, out=tmp_path / "o", preset="tiny", clients=2, local_steps=7)
    assert local_steps(fixed, 400) == 7  # without --local-epochs: the same steps for everyone


def test_sft_round_with_lora_sends_only_adapters(tmp_path, llama_dir, dialogues):
    cfg = FederatedSftConfig(model=llama_dir, data=dialogues, out=tmp_path / "o", batch_size=4, seq_len=64,
                             bf16=False, clients=2, rounds=2, local_steps=3, lr=1e-2, lora_r=4)
    task = build_task("sft", cfg)
    tensors = trainable(task.model)
    assert tensors and all("lora_" in k for k in tensors)
    new, metrics = local_round(Silo(task, list(range(task.n)), tmp_path / "c0"), tensors, 2, mu=0.0)
    assert distance(new, tensors) > 0 and metrics["train-loss"] > 0


def test_a_small_silo_trains_on_all_it_has(tmp_path, bert_dir, sentiment_rows, csv_file):
    """Dirichlet silos can be tiny: a client never needs a validation share of its own (the server validates)."""
    from genforge.federated.config import FederatedClassifyConfig
    from genforge.finetune.data import hash_bucket

    small = [r for r in sentiment_rows if hash_bucket(r[0]) != 8][:6]  # none in the validation bucket
    silo, val = csv_file("small.csv", small), csv_file("val.csv", sentiment_rows[::5])
    common = {"model": bert_dir, "out": tmp_path / "o", "clients": 1, "partition": "by-file", "client_data": [silo],
              "seq_len": 32, "bf16": False}
    with_val = build_task("classify", FederatedClassifyConfig(**common, data=silo, val_data=val), data=silo)
    assert with_val.n == 6  # all of it trains: the server validates on --val-data
    alone = build_task("classify", FederatedClassifyConfig(**common, data=silo), data=silo)
    assert alone.n == 6  # no example falls in the validation share, and that is no error for a client


class Sum:
    def loss(self, model, batch):
        return model.sum(), {}


def test_fedprox_anchors_follow_the_model_to_its_training_device():
    """A silo's first round takes the anchors while its model is on the CPU; the engine then moves the model to
    its device. Meta tensors stand in for a GPU's: CPU and meta tensors do not mix, as CPU and CUDA do not."""
    weight = torch.nn.Parameter(torch.zeros(3, device="meta"))
    proximal = Proximal(Sum(), [(weight, torch.ones(3))], mu=0.1)
    loss, _ = proximal.loss(weight, {})
    assert loss.device.type == "meta" and proximal.anchors[0][1].device.type == "meta"


class TinyClassifier(torch.nn.Module):
    """Embeddings (which adversarial training perturbs), a frozen layer and a trainable head."""

    def __init__(self):
        super().__init__()
        self.embed, self.frozen, self.head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)
        self.frozen.requires_grad_(False)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.frozen(self.embed(input_ids)).mean(1))


class CrossEntropy:
    name = "ce"

    def loss(self, model, batch):
        return F.cross_entropy(model(batch["input_ids"]), batch["labels"]), {}


def step_gradients(objective, model, batch):
    """The gradient one engine micro-batch of weight 1 leaves on the trainable weights."""
    model.zero_grad()
    if hasattr(objective, "train_step"):
        objective.train_step(model, batch, 1.0)
    else:
        objective.loss(model, batch)[0].backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("adversarial", ["none", "fgm", "pgd", "vat"])
def test_fedprox_pulls_with_mu_once_per_step_under_adversarial_training(adversarial):
    """FedProx's term mu/2 ||w - w_global||^2 has gradient mu (w - w_global). Inside the adversarial objective it was
    back-propagated on every pass that trains: FGM and PGD (a clean and a perturbed pass) pulled with 2 mu."""
    from genforge.federated.config import FederatedClassifyConfig

    cfg = FederatedClassifyConfig(model="m", data="d.csv", out="o", adversarial=adversarial, adv_epsilon=0.1,
                                  adv_alpha=0.05, adv_steps=2)
    torch.manual_seed(0)
    model = TinyClassifier()
    batch = {"input_ids": torch.randint(0, 10, (5, 6)), "labels": torch.randint(0, 3, (5,))}
    global_weights = trainable(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    mu = 0.5
    torch.manual_seed(1)
    pulled = step_gradients(round_objective(CrossEntropy(), cfg, model, global_weights, mu), model, batch)
    torch.manual_seed(1)  # VAT's random direction: the same draw in both steps
    free = step_gradients(round_objective(CrossEntropy(), cfg, model, global_weights, 0.0), model, batch)
    params = dict(model.named_parameters())
    assert set(pulled) == {"embed.weight", "head.weight", "head.bias"}  # the frozen layer has no anchor
    for name, grad in pulled.items():
        torch.testing.assert_close(grad - free[name], mu * (params[name] - global_weights[name]).detach())
