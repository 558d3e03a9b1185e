"""--max-requests-inflight and --max-mutating-requests-inflight: with APF their sum is the server's concurrency."""

from __future__ import annotations

import math

import pytest

from pocketkube.apiserver import flowcontrol, flowcontrol_defaults


def test_default_limit_is_600() -> None:
    """kube's defaults, 400 + 200, make a server concurrency limit of 600."""
    assert flowcontrol.Limiter().server_limit == 600


@pytest.mark.parametrize(("reads", "writes"), [(10, 5), (1, 0), (0, 3), (1000, 1000)])
def test_levels_share_the_sum_of_both_limits(reads: int, writes: int) -> None:
    """Each limited priority level gets ceil(sum * its shares / all shares) seats, as kube's APF does."""
    limiter = flowcontrol.Limiter(max_requests_inflight=reads, max_mutating_requests_inflight=writes)
    total = reads + writes
    assert limiter.server_limit == total
    configs = flowcontrol_defaults.priority_levels()
    shares = {c["metadata"]["name"]: c["spec"]["limited"]["nominalConcurrencyShares"]
              for c in configs if c["spec"]["type"] == "Limited"}
    for name, share in shares.items():
        assert limiter.levels[name].limit == max(1, math.ceil(total * share / sum(shares.values())))
    assert limiter.levels["exempt"].exempt


@pytest.mark.parametrize(("reads", "writes", "message"), [
    (-1, 200, "--max-requests-inflight can not be negative value"),
    (400, -1, "--max-mutating-requests-inflight can not be negative value"),
    (0, 0, "invalid configuration: MaxRequestsInFlight=0 and MaxMutatingRequestsInFlight=0; they must add up "
           "to something positive"),
])
def test_bad_limits_are_refused(reads: int, writes: int, message: str) -> None:
    """Negative limits, or limits adding up to nothing, are refused with kube-apiserver's messages."""
    with pytest.raises(ValueError) as info:
        flowcontrol.Limiter(max_requests_inflight=reads, max_mutating_requests_inflight=writes)
    assert str(info.value) == message


async def test_a_level_admits_only_its_seats() -> None:
    """With small limits a level holds exactly its seats; the next request waits for a release."""
    limiter = flowcontrol.Limiter(max_requests_inflight=4, max_mutating_requests_inflight=2)
    level = limiter.levels["workload-low"]
    taken = 0
    while level.try_acquire():
        taken += 1
    assert taken == level.limit
    level.release()
    assert level.try_acquire() and not level.try_acquire()
