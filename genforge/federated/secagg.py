"""Secure aggregation with Flower's SecAgg+ (Bell et al. 2020): the server learns only the weighted sum.

Flower 1.42 runs SecAgg+ as a workflow of its legacy server API (`DefaultWorkflow` with a
`SecAggPlusWorkflow` fit stage and a legacy `FedAvg`) and, on the client, as `secaggplus_mod`
around a ClientApp that speaks the legacy fit format (arrays as an ordered list). So this module has
the two halves of that path; the local round itself is the same `client.local_round` as always.
Each client quantises its weighted trainable tensors into [-clip, clip] (`--secagg-clip`) and masks
them with pairwise and private masks; any `--secagg-threshold` share of the sampled clients suffices
to unmask the sum, so a client that drops out after sharing its keys does not stop the round.
The server cannot see (so cannot reject) a single update: a robust aggregator or DP clipping needs
the individual updates and is refused with --secagg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.strategy import FedAvg
from flwr.supercore import log

from genforge.errors import DataError

secure_app = ClientApp(mods=[secaggplus_mod])
MASKED = np.dtype(np.int64)  # the dtype of the masked vector a client sends (Flower's masks are int64)


@secure_app.train()
def secure_round(msg: Message, context: Context) -> Message:
    """A legacy fit message -> one local round -> a legacy fit result (masked by `secaggplus_mod`)."""
    from genforge.federated.client import federation_path, local_round, read_federation, silo
    from genforge.federated.tasks import trainable

    path, partition = federation_path(context), int(context.node_config.get("partition-id", 0))
    data = str(context.node_config.get("data-path", ""))
    s = silo(path, partition, data)
    check_weight(read_federation(path)[2], partition, len(s.rows), data)  # before the round: nothing to waste
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    names = list(trainable(s.task.model))
    received = dict(zip(names, (torch.from_numpy(np.array(a)) for a in parameters_to_ndarrays(fitins.parameters)),
                        strict=True))
    tensors, metrics = local_round(s, received, int(fitins.config.get("server-round", 1)), 0.0)
    arrays = [tensors[n].numpy() for n in names]
    metrics.update({"partition-id": float(partition), "bytes-down": float(sum(map(len, fitins.parameters.tensors))),
                    "bytes-up": float(masked_bytes([a.shape for a in arrays]))})
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), len(s.rows), metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def masked_bytes(shapes: list[tuple[int, ...]]) -> int:
    """The bytes of the masked vector `secaggplus_mod` sends for arrays of these shapes, in place of the arrays.

    Flower 1.42 prepends the quantised weight factor (one integer) and adds int64 masks to every quantised
    array, so each goes up as int64 (its values stay below the 2**32 modulus), serialised as .npy: twice the
    float32 weights' size. The key exchange around it (two public keys, an encrypted pair of shares per
    neighbour, the unmasking shares: ~0.4 KB + ~0.7 KB per neighbour a round) is not counted: the mod sends it
    in stages of its own, which never reach this ClientApp (the unmasking comes after the round)."""
    total = 0
    for shape in [(1,), *shapes]:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(MASKED), "shape": shape,
                                                      "fortran_order": False})
        total += len(header.getvalue()) + math.prod(shape) * MASKED.itemsize
    return total


def check_weight(info: dict[str, Any], partition: int, weight: int, data: str) -> None:
    """Refuse to send an update whose weight (the client's size) is not the one the launcher recorded.

    `secaggplus_mod` scales each update by its weight over max_weight (the largest recorded size) before
    quantising, and the server sees only the masked sum, so no one downstream can catch a wrong weight: a
    larger one (a supernode given node-local data the launcher never read) overflows the clip range and wraps
    the modular sum, a garbage model without an error (Flower only logs a warning). Any other size means the
    client trains on data the run's record (sizes, hashes) does not describe, so it is refused too.
    """
    clients = info.get("clients") or []
    row = clients[partition] if 0 <= partition < len(clients) else {}
    recorded = row.get("examples")
    if weight != recorded:
        raise DataError(f"--secagg: client {partition} ({data or row.get('data', 'no recorded data')}) has {weight} "
                        f"examples, but the launcher recorded {'none' if recorded is None else recorded}: its update "
                        "is refused (SecAgg+ bounds every update by the recorded sizes); give the launcher the data "
                        "this client trains on")


class InDtypes(FedAvg):
    """Flower's legacy FedAvg whose aggregate keeps the clients' dtypes (`dtypes`, in the arrays' order).

    SecAgg+ dequantises the unmasked sum to float64 and the aggregate becomes the next round's model: every
    download after round 1 was twice the size (and rounds.jsonl's bytes with it), for no precision the clients
    keep (they load it into their float32 weights; the quantisation step is ~4e-6)."""

    def __init__(self, dtypes: list[np.dtype], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dtypes = dtypes

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[Any, dict]:
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is None:
            return None, metrics
        arrays = [a.astype(d, copy=False) for a, d in zip(parameters_to_ndarrays(parameters), self.dtypes, strict=True)]
        return ndarrays_to_parameters(arrays), metrics


def run_secure(grid: Any, context: Context, cfg: Any, task: Any, evaluate: Callable[[int, dict], None],
               sink: list, max_weight: float, rounds_done: int = 0) -> dict[str, torch.Tensor]:
    """Run the rounds after `rounds_done` with SecAgg+; returns the final global trainable tensors."""
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from genforge.federated.server import sampled_clients
    from genforge.federated.tasks import trainable

    names = list(trainable(task.model))
    latest: dict[str, torch.Tensor] = trainable(task.model)

    def evaluate_fn(server_round: int, ndarrays: list, config: dict) -> tuple[float, dict]:
        tensors = dict(zip(names, (torch.from_numpy(np.array(a)) for a in ndarrays), strict=True))
        latest.update(tensors)
        metrics = evaluate(server_round, tensors)
        return float(metrics.get("loss", 0.0)), metrics

    def fit_config(server_round: int) -> dict:
        if rounds_done:  # under Flower's "[ROUND k]" line, which restarts at 1 after a resume
            log(INFO, "Flower's round %d is round %d of the run", server_round, server_round + rounds_done)
        return {"server-round": server_round + rounds_done}

    def fit_metrics(results: list[tuple[int, dict]]) -> dict:
        sink.append([dict(m) for _, m in results])
        return {"clients": len(results)}

    sampled = sampled_clients(cfg)
    strategy = InDtypes([latest[n].numpy().dtype for n in names], fraction_fit=cfg.fraction_fit,
                        fraction_evaluate=0.0, min_fit_clients=sampled, min_available_clients=cfg.clients,
                        evaluate_fn=evaluate_fn,
                        initial_parameters=ndarrays_to_parameters([latest[n].numpy() for n in names]),
                        fit_metrics_aggregation_fn=fit_metrics, on_fit_config_fn=fit_config)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds - rounds_done,
                                                                round_timeout=cfg.round_timeout),
                           strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=sampled, reconstruction_threshold=max(2, int(np.ceil(cfg.secagg_threshold * sampled))),
        clipping_range=cfg.secagg_clip, max_weight=max_weight, timeout=cfg.round_timeout))
    workflow(grid, legacy)
    return latest
