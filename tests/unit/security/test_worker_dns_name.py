"""The DNS name the CA puts in every worker certificate, and the backend verifies."""

import pytest

from workfleet.security.identity import worker_dns_name


def test_a_dns_safe_id_reads_as_itself() -> None:
    assert worker_dns_name("gpu-7", "workfleet.local") == "gpu-7.workers.workfleet.local"


@pytest.mark.parametrize("worker_id", ["W1", "w_1", "w.1", "-w", "x" * 64])
def test_other_ids_get_a_digest_label_so_no_two_ids_share_a_name(worker_id: str) -> None:
    name = worker_dns_name(worker_id, "workfleet.local")
    label = name.split(".")[0]
    assert len(label) == 32 and label.isalnum() and label.islower()
    assert name != worker_dns_name(worker_id.lower() + "z", "workfleet.local")
