"""Bootstrap tokens: one use, bounded life, bound to a worker, only a digest on disk."""

import hashlib
import hmac
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workfleet.security.bootstrap import (
    REFUSED,
    BootstrapRefused,
    consume_bootstrap_token,
    create_bootstrap_token,
)
from workfleet.security.identity import IdentityError
from workfleet.security.pki import InvalidRequest

NOW = datetime(2030, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def refusal(pki: Path, raw: str, now: datetime = NOW) -> str:
    with pytest.raises(BootstrapRefused) as refused:
        consume_bootstrap_token(pki, raw, now)
    return str(refused.value)


def test_a_token_enrolls_its_worker_once(tmp_path: Path) -> None:
    raw = create_bootstrap_token(tmp_path, "w1", HOUR, NOW)
    assert raw.startswith("wfb_")
    assert consume_bootstrap_token(tmp_path, raw, NOW + timedelta(minutes=59)) == "w1"
    assert refusal(tmp_path, raw) == REFUSED


def test_every_refusal_says_the_same_thing(tmp_path: Path) -> None:
    raw = create_bootstrap_token(tmp_path, "w1", HOUR, NOW)
    token_id, secret = raw.removeprefix("wfb_").split(".")
    used = create_bootstrap_token(tmp_path, "w2", HOUR, NOW)
    consume_bootstrap_token(tmp_path, used, NOW)
    messages = {
        refusal(tmp_path, raw, NOW + HOUR),  # expired (exactly at expiry)
        refusal(tmp_path, used),  # second use
        refusal(tmp_path, f"wfb_{'0' * 16}.{secret}"),  # unknown id
        refusal(tmp_path, f"wfb_{token_id}.{secret[:-1]}x"),  # tampered secret
        refusal(tmp_path, f"wfb_{token_id}."),
        refusal(tmp_path, f"wf_{token_id}.{secret}"),  # an API key's prefix
        refusal(tmp_path, f"wfb_../../{token_id}.{secret}"),  # never a path
        refusal(tmp_path, ""),
    }
    assert messages == {REFUSED}
    # neither a wrong secret nor an attempt after expiry spent the token
    assert consume_bootstrap_token(tmp_path, raw, NOW) == "w1"


def test_only_the_digest_of_the_secret_is_on_disk(tmp_path: Path) -> None:
    raw = create_bootstrap_token(tmp_path, "w1", HOUR, NOW)
    secret = raw.split(".", 1)[1]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    contents = b"".join(p.read_bytes() for p in files)
    assert secret.encode() not in contents and raw.encode() not in contents
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in contents
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert (tmp_path / "bootstrap").stat().st_mode & 0o777 == 0o700


def test_the_secret_is_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module bootstrap calls through
    consume_bootstrap_token(tmp_path, create_bootstrap_token(tmp_path, "w1", HOUR, NOW), NOW)
    assert len(calls) == 1


def test_of_eight_concurrent_consumers_exactly_one_wins(tmp_path: Path) -> None:
    raw = create_bootstrap_token(tmp_path, "w1", HOUR, NOW)
    start = threading.Barrier(8)
    winners: list[str] = []
    refused: list[BootstrapRefused] = []

    def consume() -> None:
        start.wait()
        try:
            winners.append(consume_bootstrap_token(tmp_path, raw, NOW))
        except BootstrapRefused as exc:
            refused.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners == ["w1"]
    assert len(refused) == 7


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(hours=24, seconds=1)])
def test_lifetimes_are_bounded(tmp_path: Path, ttl: timedelta) -> None:
    with pytest.raises(InvalidRequest, match="at most 1 day"):
        create_bootstrap_token(tmp_path, "w1", ttl, NOW)


def test_tokens_are_for_worker_ids_a_certificate_can_carry(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        create_bootstrap_token(tmp_path, "../w1", HOUR, NOW)
