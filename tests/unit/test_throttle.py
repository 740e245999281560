"""Failed authentications per address: a guesser is slowed down, everyone else is not."""

from workfleet.domain.throttle import FailureThrottle


def test_an_address_is_held_off_after_the_limit_until_the_window_passes() -> None:
    throttle = FailureThrottle(limit=3, window_s=60)
    for second in range(3):
        assert throttle.retry_after("10.0.0.9", now=float(second)) is None
        throttle.failed("10.0.0.9", now=float(second))
    assert throttle.retry_after("10.0.0.9", now=10.0) == 50.0  # the first failure ages out at 60
    assert throttle.retry_after("10.0.0.7", now=10.0) is None  # another address is not slowed
    assert throttle.retry_after("10.0.0.9", now=60.5) is None  # one of three has aged out


def test_memory_stays_bounded_whatever_the_number_of_addresses() -> None:
    throttle = FailureThrottle(limit=2, window_s=60, max_sources=100)
    for index in range(1_000):
        throttle.failed(f"10.0.{index // 256}.{index % 256}", now=float(index) / 100)
    assert len(throttle._failures) <= 100
