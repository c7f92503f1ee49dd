"""SecAgg+ on Flower's simulation: the masked sum unmasks to what plain FedAvg computes; a resumed run
continues with the right round; a client whose size is not the recorded one refuses to send."""

import json

import pytest
from safetensors.torch import load_file

from genforge.errors import DataError
from genforge.federated.client import round_config
from genforge.federated.config import FederatedClassifyConfig, FederatedPretrainConfig
from genforge.federated.run import federated


@pytest.mark.slow
def test_secure_aggregation_equals_plain_averaging_and_resumes(tmp_path, bert_dir, sentiment_csv):
    def config(name, secagg, rounds=1, resume=False):
        return FederatedClassifyConfig(model=bert_dir, data=sentiment_csv, out=tmp_path / name, clients=3,
                                       rounds=rounds, local_steps=3, batch_size=8, seq_len=32, lr=3e-3, bf16=False,
                                       secagg=secagg, resume=resume)

    def run(*args, **kwargs):
        return federated(config(*args, **kwargs), "classify")

    secure, plain = load_file(run("secure", True) / "model.safetensors"), load_file(run("plain", False) /
                                                                                    "model.safetensors")
    moved = max((plain[k] - load_file(bert_dir / "model.safetensors").get(k, plain[k])).abs().max().item()
                for k in plain)
    assert moved > 1e-4  # the round changed the model ...
    assert max((secure[k] - plain[k]).abs().max().item() for k in plain) < 1e-4  # ... and the sums agree

    # Resumed to 2 rounds, the clients train round 2 at round 2's learning rate. (Its weights are not compared
    # with an uninterrupted run's: SecAgg+ rounds stochastically when it quantises, and Adam turns that 1e-5
    # into steps of up to lr on coordinates whose gradient is ~0.)
    rows = [json.loads(line) for line in (run("secure", True, 2, resume=True) / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert {c["round"] for c in rows[2]["clients"]} == {2} and len(rows[2]["clients"]) == 3
    round_two = round_config(config("secure", True, 2), 2, 3).lr
    assert round_two < 3e-3 and all(c["lr"] == pytest.approx(round_two) for c in rows[2]["clients"])


@pytest.mark.slow
def test_secure_aggregation_of_real_pretraining_silos_equals_plain_averaging(tmp_path, packed, pack_shakespeare):
    """By-file silos of token windows, of different sizes: each client scales its update by its size over the
    largest (max_weight, from the launcher), so the masked sum unmasks to FedAvg's weighted mean. (With the
    size unknown, max_weight was 1: updates scaled by ~100, clipped to +-8, a garbage model.)"""
    def run(name, secagg):
        cfg = FederatedPretrainConfig(client_data=[packed, pack_shakespeare(30_000), packed], partition="by-file",
                                      out=tmp_path / name, clients=3, rounds=1, local_steps=2, batch_size=4,
                                      seq_len=32, preset="tiny", eval_batches=1, lr=3e-3, bf16=False, secagg=secagg)
        return load_file(federated(cfg, "pretrain") / "model.safetensors")

    secure, plain = run("secure", True), run("plain", False)
    assert max((secure[k] - plain[k]).abs().max().item() for k in plain) < 1e-4


def test_the_secure_aggregate_goes_back_to_the_clients_in_their_dtype():
    """SecAgg+ dequantises the unmasked sum to float64, and Flower's FedAvg kept it: from round 2 on every client
    downloaded the model at twice its size (rounds.jsonl: bytes_down 261136 after 130568, a tiny BERT's head)."""
    import numpy as np
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from genforge.federated.secagg import InDtypes

    unmasked = [np.array([0.1, -2.5, 3e-6]), np.array([[1.0, 2.0]])]  # what SecAggPlusWorkflow hands every result
    result = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(unmasked), 40, {})
    strategy = InDtypes([np.dtype(np.float32), np.dtype(np.float16)], fraction_evaluate=0.0)
    parameters, _ = strategy.aggregate_fit(1, [(None, result), (None, result)], [])
    aggregate = parameters_to_ndarrays(parameters)
    assert [a.dtype for a in aggregate] == [np.float32, np.float16]
    for got, want in zip(aggregate, unmasked, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3)


def federation_of_three(tmp_path, bert_dir, sentiment_rows, csv_file, monkeypatch):
    """federation.json of three by-file clients of 40 examples, and the task, as the launcher writes them for
    SuperNodes (with the task identity a SuperNode sets before its ClientApp runs)."""
    from flwr.supercore.task_identity import TaskIdentity

    from genforge.artifacts import write_json
    from genforge.config import to_dict
    from genforge.federated.run import silos
    from genforge.federated.tasks import build_task

    cfg = FederatedClassifyConfig(model=bert_dir, out=tmp_path / "o", clients=3, partition="by-file", rounds=1,
                                  client_data=[csv_file(f"c{k}.csv", sentiment_rows[k * 40:(k + 1) * 40])
                                               for k in range(3)],
                                  val_data=csv_file("val.csv", sentiment_rows[::5]), local_steps=1, batch_size=8,
                                  seq_len=32, bf16=False, secagg=True)
    task = build_task("classify", cfg)
    clients, _ = silos("classify", cfg, task)
    assert [c["examples"] for c in clients] == [40, 40, 40]  # --val-data given: every example trains
    federation = tmp_path / "federation.json"
    write_json(federation, {"task": "classify", "config": to_dict(cfg), "labels": task.label_set,
                            "clients": clients, "work_dir": str(tmp_path / "clients")})
    for key in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, key, 1)
    return federation, task


def test_a_client_whose_size_is_not_the_recorded_one_refuses_to_send(tmp_path, bert_dir, sentiment_rows, csv_file,
                                                                     monkeypatch):
    """A SuperNode given node-local data (`data-path`) that is not the silo the launcher read would weigh its
    update by a size above max_weight and wrap SecAgg+'s modular sum (a garbage model, no error): the client
    refuses in one line, naming itself, its data and both sizes. A client of the recorded size sends as before."""
    from flwr.app import Context, Message, RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    from genforge.federated.secagg import secure_round
    from genforge.federated.tasks import trainable

    federation, task = federation_of_three(tmp_path, bert_dir, sentiment_rows, csv_file, monkeypatch)
    fitins = FitIns(ndarrays_to_parameters([t.numpy() for t in trainable(task.model).values()]), {"server-round": 1})

    def send(node_config):
        msg = Message(compat.fitins_to_recorddict(fitins, keep_input=True), dst_node_id=1, message_type="train")
        context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(),
                          run_config={"federation": str(federation)})
        return compat.recorddict_to_fitres(secure_round(msg, context).content, keep_input=True)

    local = csv_file("local.csv", sentiment_rows)  # node-local data: all 120 rows, not the 40 of c0.csv
    with pytest.raises(DataError, match=r"^--secagg: client 0 \(.*local\.csv\) has 120 examples, but the "
                                        r"launcher recorded 40: its update is refused"):
        send({"partition-id": 0, "data-path": str(local)})
    assert send({"partition-id": 1}).num_examples == 40


def test_a_secure_clients_bytes_are_what_it_sends(tmp_path, bert_dir, sentiment_rows, csv_file, monkeypatch):
    """bytes-up counted the float32 tensors, but `secaggplus_mod` sends them quantised and masked as int64 (with
    the weight factor, as .npy): the bytes of the masked vector the mod sends, here through the protocol's first
    three stages between two clients. bytes-down is what came (the serialised tensors)."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
    from flwr.compat.common import recorddict_compat as compat

    from genforge.federated.secagg import secure_app
    from genforge.federated.tasks import trainable

    federation, task = federation_of_three(tmp_path, bert_dir, sentiment_rows, csv_file, monkeypatch)
    tensors = [t.numpy() for t in trainable(task.model).values()]
    fitins = FitIns(ndarrays_to_parameters(tensors), {"server-round": 1})
    contexts = {nid: Context(run_id=1, node_id=nid, node_config={"partition-id": nid - 1}, state=RecordDict(),
                             run_config={"federation": str(federation)}) for nid in (1, 2)}

    def stage(nid, config, content=None):  # one of SecAggPlusWorkflow's messages to node `nid`, and its reply
        content = content or RecordDict()
        content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(config)
        return secure_app(Message(content, dst_node_id=nid, message_type="train"), contexts[nid]).content

    setup = {Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: 2, Key.SHARE_NUMBER: 2, Key.THRESHOLD: 2,
             Key.CLIPPING_RANGE: 8.0, Key.TARGET_RANGE: 2**22, Key.MOD_RANGE: 2**32, Key.MAX_WEIGHT: 40.0}
    keys = {str(nid): [r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2]]
            for nid, r in ((nid, stage(nid, dict(setup)).config_records[RECORD_KEY_CONFIGS]) for nid in contexts)}
    shares = {nid: stage(nid, {Key.STAGE: Stage.SHARE_KEYS, **keys}).config_records[RECORD_KEY_CONFIGS]
              for nid in contexts}
    reply = stage(1, {Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.CIPHERTEXT_LIST: shares[2][Key.CIPHERTEXT_LIST],
                      Key.SOURCE_LIST: [2]}, compat.fitins_to_recorddict(fitins, keep_input=True))
    sent = reply.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
    metrics = compat.recorddict_to_fitres(reply, keep_input=True).metrics
    assert metrics["bytes-up"] == sum(map(len, sent))
    assert metrics["bytes-up"] > 2 * sum(t.nbytes for t in tensors)  # int64 for float32
    assert metrics["bytes-down"] == sum(map(len, fitins.parameters.tensors))
