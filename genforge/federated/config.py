"""Configs of `genforge federated classify|sft|pretrain`: the centralized config plus a federated section.

Light on purpose (no torch/flwr import). Each federated command's config is the centralized one
(`ClassifyConfig`, `SftConfig`, `PretrainConfig`) extended by `FederatedFields`, so every flag of the
centralized command means the same thing here and a recipe switches to federated training by adding
the federated keys, not by changing code. The engine settings a round sets itself (`--max-steps`,
`--epochs`, `--warmup-steps`, ...: `cli_omitted`) are not flags here: a federated run is `--rounds` rounds of
`--local-steps` optimizer steps on each sampled client.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from genforge.config import Config, field
from genforge.errors import ConfigError
from genforge.finetune.config import ClassifyConfig, SftConfig
from genforge.train.config import PretrainConfig

PARTITIONS = ("iid", "dirichlet", "quantity", "by-file")
FAILURE = "failure.txt"  # in the run's work folder: why the server stopped the run (Flower swallows its errors)
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "median", "trimmed-mean")
ENGINES = ("simulation", "deployment")
TASKS = ("classify", "sft", "pretrain")


def sampled_clients(cfg: FederatedFields) -> int:
    """How many clients Flower samples per round: max(int(clients * fraction), 1)."""
    return max(1, int(cfg.clients * cfg.fraction_fit))


@dataclass(kw_only=True)
class FederatedFields(Config):
    """How the data is split over clients, how rounds run and aggregate, privacy and where it runs."""

    # Engine settings every round sets itself (`client.round_config`): as flags they would be taken and do
    # nothing, so the command does not offer them (a recipe's centralized keys may still carry them).
    cli_omitted: ClassVar[tuple[str, ...]] = ("max_steps", "epochs", "max_minutes", "warmup_steps", "eval_every",
                                              "save_every", "log_every", "patience", "compile")

    data: Path | None = field(None, help="the training data split into --clients silos (a file; for pretrain a "
                                         "packed folder); not needed with --partition by-file, whose silos are the "
                                         "--client-data")
    clients: int = field(3, help="number of clients (data silos); with --partition by-file, one per --client-data")
    rounds: int = field(5, help="federated rounds (each: sampled clients train locally, the server aggregates)")
    resume: bool = field(False, help="continue the run in --out after its last finished round (the server saves "
                                     "its state every round); --rounds may grow, the other settings must match")
    local_steps: int = field(20, help="optimizer steps each sampled client runs per round (unless --local-epochs)")
    local_epochs: float = field(0.0, help="passes over its own data each sampled client makes per round (McMahan "
                                          "et al.'s E; a silo of n units runs E * n / batch steps, so a "
                                          "large silo is not left mostly unread); 0 = --local-steps for everyone")
    partition: str = field("iid", help="how one dataset is split into silos: iid, label-skew dirichlet(alpha), "
                                       "quantity skew (client sizes ~ dirichlet(alpha)), or by-file (real silos: "
                                       "one --client-data per client)", choices=PARTITIONS)
    alpha: float = field(0.5, help="dirichlet/quantity: concentration; smaller = more skewed silos")
    client_data: list[Path] = field(default_factory=list, help="by-file: the data of each client (repeatable, "
                                                               "in client order)")
    strategy: str = field("fedavg", help="server aggregation: FedAvg, FedAvgM (server momentum --server-momentum), "
                                         "FedProx (proximal term --mu), FedAdam/FedYogi "
                                         "(server optimiser, --server-lr), or a robust coordinate median / trimmed "
                                         "mean against poisoned clients", choices=STRATEGIES)
    mu: float = field(0.01, help="fedprox: weight of the proximal term mu/2 ||w - w_global||^2")
    server_lr: float = field(0.01, help="fedadam/fedyogi: the server optimiser's learning rate")
    server_tau: float = field(1e-3, help="fedadam/fedyogi: the server optimiser's epsilon (Reddi et al. 2021's tau); "
                                         "keep it well below the size of a round's average update, or the server "
                                         "steps shrink to eta * update / tau")
    server_momentum: float = field(0.9, help="fedavgm: momentum of the server's step along the averaged update "
                                             "(Hsu et al. 2019: non-IID clients make small, noisy average steps)")
    trim: float = field(0.2, help="trimmed-mean: fraction of the highest and of the lowest values cut per coordinate")
    fraction_fit: float = field(1.0, help="fraction of the clients sampled for training each round")
    min_fit_clients: int = field(0, help="fewest clients a round trains on (0 = the sampled number); a round whose "
                                         "replies fall short of it is skipped, not fatal")
    round_timeout: float = field(600.0, help="seconds the server waits for replies in a round; a client that "
                                             "crashes or is slower is left out of that round")
    dp_noise: float = field(0.0, help="central differential privacy: Gaussian noise multiplier on the aggregate "
                                      "(0 = off); epsilon is accounted with Flower's RDP accountant")
    dp_clip: float = field(0.1, help="DP: each client's update is clipped to this L2 norm")
    dp_delta: float = field(1e-5, help="DP: the delta at which epsilon is reported")
    secagg: bool = field(False, help="secure aggregation with Flower's SecAgg+: the server sees only the weighted "
                                     "sum of the clients' tensors (fedavg only; no DP or robust aggregator)")
    secagg_clip: float = field(8.0, help="SecAgg+: tensors are clipped to [-clip, clip] before quantisation")
    secagg_threshold: float = field(0.5, help="SecAgg+: share of the sampled clients needed to unmask the sum")
    engine: str = field("simulation", help="simulation (Flower's Ray simulation on this machine) or deployment (a "
                                           "running SuperLink with SuperNodes)", choices=ENGINES)
    superlink: str = field("127.0.0.1:8000", help="deployment: the address `flwr run` submits the run to "
                                                  "(the SuperLink)")
    insecure: bool = field(True, help="deployment: plain-text gRPC (use TLS certificates in production, see "
                                      "docs/federated.md)")
    client_cpus: float = field(1.0, help="simulation: CPU cores reserved per client (Ray)")
    total_cpus: int = field(2, help="simulation: CPU cores Ray may use in all")

    def check_federated(self) -> None:
        if self.partition != "by-file" and self.data is None:
            raise ConfigError(f"give the data to split into silos: --data (--partition {self.partition}); or give "
                              "real silos: --partition by-file and one --client-data per client")
        if self.clients < 1 or self.rounds < 1 or self.local_steps < 1:
            raise ConfigError(f"--clients, --rounds and --local-steps must be positive, got {self.clients}, "
                              f"{self.rounds}, {self.local_steps}")
        if self.alpha <= 0:
            raise ConfigError(f"--alpha must be positive, got {self.alpha}")
        if self.local_epochs < 0:
            raise ConfigError(f"--local-epochs must be >= 0 (0 = use --local-steps), got {self.local_epochs}")
        if self.partition == "by-file" and len(self.client_data) != self.clients:
            raise ConfigError(f"--partition by-file needs one --client-data per client: got {len(self.client_data)} "
                              f"files for --clients {self.clients}")
        if self.client_data and self.partition != "by-file":
            raise ConfigError("--client-data gives real silos: use it with --partition by-file")
        if not 0 < self.fraction_fit <= 1:
            raise ConfigError(f"--fraction-fit must be in (0, 1], got {self.fraction_fit}")
        sampled = sampled_clients(self)
        if not 0 <= self.min_fit_clients <= sampled:  # more would skip every round: a run that trains nothing
            raise ConfigError(f"--min-fit-clients must be in [0, {sampled}] (the clients sampled per round: --clients "
                              f"x --fraction-fit), got {self.min_fit_clients}")
        if not 0 <= self.trim < 0.5:
            raise ConfigError(f"--trim must be in [0, 0.5), got {self.trim}")
        if not 0 <= self.server_momentum < 1:
            raise ConfigError(f"--server-momentum must be in [0, 1); got {self.server_momentum}")
        if self.mu < 0 or self.server_lr <= 0 or self.server_tau <= 0 or self.round_timeout <= 0:
            raise ConfigError("--mu must be >= 0, --server-lr, --server-tau and --round-timeout positive")
        if self.dp_noise < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise ConfigError(f"DP needs --dp-noise >= 0, --dp-clip > 0, 0 < --dp-delta < 1; got {self.dp_noise}, "
                              f"{self.dp_clip}, {self.dp_delta}")
        if self.dp_noise and self.strategy not in ("fedavg", "fedprox"):
            raise ConfigError(f"--dp-noise is accounted for plain averaging: use --strategy fedavg or fedprox, "
                              f"not {self.strategy}")
        if self.secagg and (self.strategy != "fedavg" or self.dp_noise):
            raise ConfigError("--secagg hides single updates, so it works with --strategy fedavg and no --dp-noise")
        if self.secagg and int(self.clients * self.fraction_fit) < 3:  # Flower's SecAgg+ refuses 2 shares; and
            # with 2 clients each could subtract its own update from the sum and read the other's
            raise ConfigError("--secagg needs at least 3 clients sampled per round (--clients x --fraction-fit)")
        if self.secagg_clip <= 0 or not 0 < self.secagg_threshold <= 1:
            raise ConfigError("--secagg-clip must be positive and --secagg-threshold in (0, 1]")
        if self.client_cpus <= 0 or self.total_cpus < 1:
            raise ConfigError("--client-cpus must be positive and --total-cpus at least 1")
        if self.engine == "simulation" and self.client_cpus > self.total_cpus:  # Ray could place no client
            raise ConfigError(f"--client-cpus {self.client_cpus:g} is more than --total-cpus {self.total_cpus}: "
                              "no client would fit in the simulation")


def check_centralized(cfg: FederatedFields, centralized: type) -> None:
    """The centralized command's own checks on `cfg`. They require --data, which real silos (--partition
    by-file) do without: there the first client's file stands in for it, as every silo is such a file."""
    if cfg.partition == "by-file" and cfg.data is None and cfg.client_data:
        cfg = dataclasses.replace(cfg, data=cfg.client_data[0])
    centralized.check(cfg)


@dataclass(kw_only=True)
class FederatedClassifyConfig(FederatedFields, ClassifyConfig):
    """Federated text classification: `finetune classify` on each silo, one global classifier."""

    def check(self) -> None:
        self.check_federated()
        check_centralized(self, ClassifyConfig)


@dataclass(kw_only=True)
class FederatedSftConfig(FederatedFields, SftConfig):
    """Federated SFT: `finetune sft` on each silo's dialogues, one global chat model."""

    def check(self) -> None:
        self.check_federated()
        check_centralized(self, SftConfig)
        if self.partition == "dirichlet":
            raise ConfigError("--partition dirichlet skews labels; dialogues have none: use iid, quantity or by-file")


@dataclass(kw_only=True)
class FederatedPretrainConfig(FederatedFields, PretrainConfig):
    """Federated causal/masked-LM (pre)training on packed token files: one packed folder per silo or a split."""

    def check(self) -> None:
        self.check_federated()
        check_centralized(self, PretrainConfig)
        if self.partition == "dirichlet":
            raise ConfigError("--partition dirichlet skews labels; token streams have none: use iid, quantity "
                              "or by-file (one packed folder per client)")


@dataclass(kw_only=True)
class FederatedRecipeConfig(Config):
    """A YAML recipe: `task` (classify|sft|pretrain), the centralized keys, and a `federated:` section."""

    recipe: Path = field(None, help="recipe YAML: `task`, the task's config keys, `federated:` keys", argument=True)

    def check(self) -> None:
        if self.recipe is None:
            raise ConfigError("give a recipe: genforge federated --recipe RECIPE.yaml")


CONFIGS = {"classify": FederatedClassifyConfig, "sft": FederatedSftConfig, "pretrain": FederatedPretrainConfig}
