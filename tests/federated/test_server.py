"""Aggregation on real Flower strategies with reply messages as a ServerApp receives them."""

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from genforge.errors import ConfigError
from genforge.federated.config import FederatedClassifyConfig
from genforge.federated.privacy import epsilon, noise_for
from genforge.federated.resume import load_round, restore_server, save_round
from genforge.federated.server import build_strategy


@pytest.fixture(autouse=True)
def run_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # set in a ServerApp process


def cfg(**kw):
    return FederatedClassifyConfig(model="m", data="d.csv", out="o", **{"clients": 5, **kw})


def reply(values, examples=10.0):
    metrics = MetricRecord({"weight": examples, "examples": examples, "train-loss": 0.5, "bytes-up": 1.0,
                            "bytes-down": 1.0, "partition-id": 0.0})
    return Message(RecordDict({"arrays": ArrayRecord({"w": torch.tensor(values, dtype=torch.float32)}),
                               "metrics": metrics}), dst_node_id=1, message_type="train")


def aggregate(strategy, replies):
    arrays, metrics = strategy.aggregate_train(1, replies)
    return None if arrays is None else arrays["w"].numpy(), metrics


HONEST = [[1.0, 2.0], [1.1, 2.1], [0.9, 1.9], [1.0, 2.0]]


def test_fedavg_is_the_weighted_mean():
    w, metrics = aggregate(build_strategy(cfg()), [reply([0, 0], 1), reply([4, 8], 3)])
    assert w == pytest.approx([3, 6]) and metrics["clients"] == 2


def test_the_round_train_loss_is_the_example_weighted_mean_of_the_finite_client_losses():
    """A client whose loss was NaN was left out of the sum but not of the weights: (1*1 + 2*2) / 4 = 1.25, not 5/3."""
    def with_loss(loss, examples):
        message = reply([1.0], examples)
        message.content["metrics"]["train-loss"] = loss
        return message

    _, metrics = aggregate(build_strategy(cfg()), [with_loss(1.0, 1), with_loss(math.nan, 1), with_loss(2.0, 2)])
    assert metrics["train-loss"] == pytest.approx(5 / 3)
    _, metrics = aggregate(build_strategy(cfg()), [with_loss(math.nan, 1), with_loss(math.nan, 2)])
    assert math.isnan(metrics["train-loss"])  # no client loss to average, rather than a loss of 0


def test_fedavgm_keeps_moving_along_past_averages():
    strategy = build_strategy(cfg(strategy="fedavgm", server_momentum=0.9))
    strategy.strategy.current_arrays = ArrayRecord({"w": torch.zeros(2)})  # what the first configure_train keeps
    replies = [reply([0, 0], 1), reply([4, 8], 3)]  # weighted mean [3, 6]
    first, _ = aggregate(strategy, replies)
    assert first == pytest.approx([3, 6])  # the first step is plain FedAvg
    second, _ = aggregate(strategy, replies)  # the clients now agree with the model: only momentum moves it
    assert second == pytest.approx([3 + 0.9 * 3, 6 + 0.9 * 6])


def test_fedadam_steps_each_coordinate_by_about_its_server_lr_whatever_the_update_size():
    strategy = build_strategy(cfg(strategy="fedadam", server_lr=0.02, server_tau=1e-9))
    strategy.strategy.current_arrays = {"w": np.zeros(2, np.float32)}  # what FedOpt's configure_train keeps
    w, _ = aggregate(strategy, [reply([1e-3, -1e-5]), reply([1e-3, -1e-5])])
    step = 0.02 * (1 - 0.99**2) ** 0.5 / (1 - 0.9**2)  # round 1, bias-corrected: eta * that * sign(update)
    assert w == pytest.approx([step, -step], rel=2e-3)
    damped = build_strategy(cfg(strategy="fedadam", server_lr=0.02, server_tau=1e-3))  # Flower's default tau
    damped.strategy.current_arrays = {"w": np.zeros(2, np.float32)}
    small, _ = aggregate(damped, [reply([1e-3, -1e-5]), reply([1e-3, -1e-5])])
    assert abs(small[0]) < step / 5  # tau >> 0.1 * update: the step shrinks


def test_a_scaled_update_drags_fedavg_but_not_the_robust_aggregators():
    poisoned = [reply(v) for v in HONEST] + [reply([1000.0, -1000.0])]
    mean, _ = aggregate(build_strategy(cfg(strategy="fedavg")), poisoned)
    assert abs(mean[0] - 1) > 100
    for name in ("median", "trimmed-mean"):
        w, _ = aggregate(build_strategy(cfg(strategy=name)), [reply(v) for v in HONEST] + [reply([1e3, -1e3])])
        assert w == pytest.approx([1.0, 2.0], abs=0.11), name


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed-mean"])
def test_nan_updates_are_rejected_before_aggregation(name):
    strategy = build_strategy(cfg(strategy=name))
    w, _ = aggregate(strategy, [reply(v) for v in HONEST] + [reply([math.nan, math.inf])])
    assert np.isfinite(w).all() and strategy.rounds[1]["rejected"] == 1 and strategy.rounds[1]["used"] == 4


def test_a_round_short_of_min_fit_clients_is_skipped_not_fatal():
    strategy = build_strategy(cfg(min_fit_clients=3))
    assert aggregate(strategy, [reply([1, 1]), reply([math.nan, 0])]) == (None, None)


def test_dp_accounting_matches_the_gaussian_rdp_bound():
    def classic(z, rounds, delta):  # RDP of the Gaussian mechanism, composed, converted (Mironov 2017)
        return min(rounds * a / (2 * z * z) + math.log(1 / delta) / (a - 1) for a in np.arange(1.01, 200, 0.01))

    for z, rounds in ((1.0, 10), (2.0, 20), (4.0, 5)):
        eps = epsilon(z, rounds, sampled=5, population=5, delta=1e-5)
        assert 0.8 * classic(z, rounds, 1e-5) < eps <= classic(z, rounds, 1e-5) + 1e-6
    assert epsilon(1.0, 20, sampled=5, population=5, delta=1e-5) > epsilon(1.0, 10, sampled=5, population=5,
                                                                             delta=1e-5)
    z = noise_for(8.0, 10, sampled=5, population=5, delta=1e-5)
    assert epsilon(z, 10, sampled=5, population=5, delta=1e-5) <= 8.0 < epsilon(0.95 * z, 10, sampled=5,
                                                                                  population=5, delta=1e-5)


@pytest.mark.parametrize("target", [0.0, -1.0])
def test_noise_for_an_unreachable_epsilon_is_refused(target):
    """No finite noise reaches epsilon <= 0: an error, not the ~2e5 where the accountant rounds to 0."""
    with pytest.raises(ConfigError, match="target epsilon > 0"):
        noise_for(target, 10, sampled=5, population=5, delta=1e-5)


def test_dp_wrapper_clips_noises_and_accounts_a_round():
    strategy = build_strategy(cfg(dp_noise=1.0, dp_clip=0.5, clients=2))
    dp = strategy.strategy
    dp.current_arrays = ArrayRecord({"w": torch.zeros(2)})
    dp._prepare_accounting(1, [None, None])  # what configure_train records for the 2 sampled clients
    w, _ = aggregate(strategy, [reply([100.0, 0.0], 1), reply([0.0, 100.0], 1)])
    # each update is clipped to norm 0.5 before averaging: the mean is ~0.25 per coordinate + noise (std 0.25)
    assert np.abs(w).max() < 2.0
    assert dp.privacy_spent().epsilon == pytest.approx(epsilon(1.0, 1, sampled=2, population=2, delta=1e-5))


def test_a_run_where_every_client_fails_says_why():
    strategy = build_strategy(cfg(clients=2))
    sent = reply([1.0, 2.0])
    reason = ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'Exception ClientAppException occurred. "
              "Message: silo.csv holds no examples'>")  # as Flower's simulation reports a client's exception
    failed = [Message(Error(code=0, reason=reason), reply_to=sent) for _ in range(2)]
    for server_round in (1, 2):
        strategy.rounds[server_round] = {"sampled": 2}
        assert aggregate(strategy, failed)[0] is None
    assert strategy.failure() == "no round aggregated a client update in 2 round(s): the first client error was: " \
                                 "silo.csv holds no examples"
    aggregate(strategy, [reply([1.0, 2.0]), reply([1.0, 2.0])])
    assert strategy.failure() is None  # one useful round is progress


def three_rounds():
    return [[reply([1.0, -2.0]), reply([3.0, 0.5])], [reply([0.5, 1.0]), reply([-1.0, 2.0])],
            [reply([2.0, 2.0]), reply([0.0, 1.0])]]


def one_round(strategy, server_round, arrays, replies):
    """What Flower's loop does around one round, for the optimiser's view: configure, then aggregate."""
    opt = strategy.strategy
    opt.current_arrays = {"w": arrays} if hasattr(opt, "m_t") else ArrayRecord({"w": torch.from_numpy(arrays)})
    out, _ = strategy.aggregate_train(server_round, replies)
    return out["w"].numpy()


@pytest.mark.parametrize("settings", [{"strategy": "fedadam", "server_lr": 0.1}, {"strategy": "fedyogi"},
                                      {"strategy": "fedavgm", "server_momentum": 0.9}])
def test_server_optimiser_state_survives_a_restart(tmp_path, settings):
    straight = build_strategy(cfg(**settings))
    w = np.zeros(2, np.float32)
    for k, replies in enumerate(three_rounds(), 1):
        w = one_round(straight, k, w, replies)

    first = build_strategy(cfg(**settings))
    resumed_w = one_round(first, 1, np.zeros(2, np.float32), three_rounds()[0])
    save_round(tmp_path, 1, {"w": torch.from_numpy(resumed_w)}, first, 12.5)
    saved = load_round(tmp_path)
    assert saved["round"] == 1 and saved["seconds"] == 12.5 and saved["aggregated"]
    second = build_strategy(cfg(**settings))
    restore_server(second, saved, cfg(**settings))
    second.offset = 1  # Flower counts this session's rounds from 1 again; FedAdam's bias correction must not
    resumed_w = saved["tensors"]["w"].numpy()
    for k, replies in enumerate(three_rounds()[1:], 1):
        resumed_w = one_round(second, k, resumed_w, replies)
    np.testing.assert_allclose(resumed_w, w, rtol=1e-6)


def test_dp_accounting_continues_from_the_rounds_already_released(tmp_path):
    settings = cfg(dp_noise=1.0, dp_clip=0.5, clients=2)
    first = build_strategy(settings)
    dp = first.strategy
    for k in (1, 2):
        dp.current_arrays = ArrayRecord({"w": torch.zeros(2)})
        dp._prepare_accounting(k, [None, None])
        first.aggregate_train(k, [reply([0.1, 0.0], 1), reply([0.0, 0.1], 1)])
    save_round(tmp_path, 2, {"w": torch.zeros(2)}, first, 1.0)
    second = build_strategy(settings)
    restore_server(second, load_round(tmp_path), settings)
    spent = second.strategy.privacy_spent()
    assert spent.num_releases == 2
    assert spent.epsilon == pytest.approx(epsilon(1.0, 2, sampled=2, population=2, delta=1e-5))


def test_fedadam_sends_the_model_in_the_clients_dtype():
    """Flower's FedAdam returns float64: every download after round 1 was twice the size (rounds.jsonl's bytes
    doubled), and a resumed run, restarting from the checkpoint's float32, started from other numbers."""
    strategy = build_strategy(cfg(strategy="fedadam"))
    strategy.strategy.current_arrays = {"w": np.zeros(2, np.float32)}
    w, _ = aggregate(strategy, [reply([1.0, 2.0]), reply([0.5, 1.0])])
    assert w.dtype == np.float32


class AnsweringGrid:
    """Two connected nodes that reply to every train message with the arrays they were sent."""

    def get_node_ids(self):
        return [1, 2]

    def send_and_receive(self, messages, timeout=None):
        return [Message(RecordDict({"arrays": m.content["arrays"], "metrics": reply([0.0]).content["metrics"]}), reply_to=m)
                for m in messages]


def test_a_resumed_session_says_which_round_of_the_run_each_flower_round_is(caplog):
    """After --resume, Flower's own log numbered the rounds from 1 again ("[ROUND 1/2]" for the run's round 4)
    and nothing in the log said which round of the run that was."""
    from genforge.federated.resume import renumbered_rounds

    strategy = build_strategy(cfg(clients=2))
    strategy.offset = 3  # as run_server sets it after restoring round 3
    with caplog.at_level("INFO", logger="flwr"):
        strategy.start(AnsweringGrid(), ArrayRecord({"w": torch.zeros(2)}), num_rounds=2)
    lines = [r.getMessage() for r in caplog.records]
    for flower_round, run_round in ((1, 4), (2, 5)):
        at = lines.index(f"[ROUND {flower_round}/2]")
        assert f"Flower's round {flower_round} is round {run_round} of the run" in lines[at + 1:at + 3]
    assert sorted(strategy.rounds) == [4, 5]
    assert renumbered_rounds(3, 5) == ("resuming after round 3 of 5: Flower counts this session's rounds from 1 "
                                       "again, so its round k is round 3 + k of the run (its round 1 is round 4); "
                                       "rounds.jsonl, the checkpoints and the clients use the run's numbers")
