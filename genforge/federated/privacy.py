"""Client-level differential privacy: Flower's central-DP wrapper with fixed clipping, and its accounting.

Each round the server clips every client's update to L2 norm `clip`, averages them with equal
weights and adds Gaussian noise of standard deviation `noise * clip / sampled clients`
(`DifferentialPrivacyServerSideFixedClipping`, McMahan et al. 2018). Flower's RDP accountant
(Google's dp-accounting underneath) composes the rounds and reports (epsilon, delta): the privacy of
a whole client's data, not of one example. No amplification by sampling is claimed (the sampled
clients are not a Poisson sample), so the reported epsilon is an upper bound for any sampling.
"""

from __future__ import annotations

from typing import Any

from genforge.errors import ConfigError


def accountant(population: int, delta: float) -> Any:
    """Flower's RDP accountant for `population` clients, reporting epsilon at `delta`."""
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(PrivacyConfig(target_delta=delta, population_size=population,
                                       neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                       sampling_method=SamplingMethod.NO_AMPLIFICATION))


def with_dp(strategy: Any, *, noise: float, clip: float, sampled: int, population: int, delta: float) -> Any:
    """`strategy` (FedAvg or FedProx) wrapped with server-side clipping, noise and accounting."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    return DifferentialPrivacyServerSideFixedClipping(strategy, noise, clip, sampled,
                                                      accountant=accountant(population, delta))


def epsilon(noise: float, rounds: int, *, sampled: int, population: int, delta: float) -> float:
    """The epsilon that `rounds` noisy rounds will have spent (to plan a run before starting it)."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    acc = accountant(population, delta)
    acc.compose(GaussianPrivacyEvent(noise_multiplier=noise, sample_size=sampled, population_size=population),
                count=rounds)
    return acc.get_epsilon(delta)


def noise_for(target_epsilon: float, rounds: int, *, sampled: int, population: int, delta: float) -> float:
    """The smallest noise multiplier (to 1%) whose `rounds` rounds stay within `target_epsilon`.

    Epsilon 0 is no finite noise's: a target <= 0 is refused, where the search would stop at whatever noise
    the accountant's rounding reports as 0 (about 2e5) and pass it off as an answer."""
    if target_epsilon <= 0 or rounds < 1:
        raise ConfigError(f"a DP noise needs a target epsilon > 0 and rounds >= 1; got {target_epsilon}, {rounds}")
    low, high = 0.05, 1.0
    while epsilon(high, rounds, sampled=sampled, population=population, delta=delta) > target_epsilon:
        low, high = high, high * 2
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        if epsilon(mid, rounds, sampled=sampled, population=population, delta=delta) > target_epsilon:
            low = mid
        else:
            high = mid
    return high
