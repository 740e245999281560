"""The audit log on a real backend: key changes over HTTP are recorded, admins read them back,
and `workfleet audit verify` checks the data dir offline, naming the record someone edited."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing

import httpx

from workfleet.harness.cluster import Cluster


def workfleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "workfleet", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_key_changes_are_audited_readable_by_admins_and_verified_offline(
    cluster: Cluster,
) -> None:
    admin = {"Authorization": f"Bearer {cluster.admin_key}"}
    admin_id = cluster.admin_key[3:].split(".")[0]
    async with httpx.AsyncClient(base_url=cluster.url, trust_env=False) as http:
        created = await http.post(
            "/api/v1/keys",
            json={"role": "viewer", "name": "vera"},
            headers=admin | {"X-Request-ID": "req-from-the-caller-1"},
        )
        assert created.status_code == 201, created.text
        viewer = {"Authorization": f"Bearer {created.json()['key']}"}
        viewer_id = created.json()["key_id"]
        assert (await http.get("/api/v1/audit", headers=viewer)).status_code == 403
        revoked = await http.post(f"/api/v1/keys/{viewer_id}/revoke", headers=admin)
        assert revoked.status_code == 200, revoked.text

        page = (await http.get("/api/v1/audit", headers=admin)).json()
        first = (await http.get("/api/v1/audit?limit=1", headers=admin)).json()
        rest = (await http.get("/api/v1/audit?after_seq=1", headers=admin)).json()

    assert [
        (r["seq"], r["actor"], r["action"], r["target"], r["outcome"]) for r in page["items"]
    ] == [
        (1, f"key:{admin_id} (admin)", "key.create", f"key:{viewer_id}", "ok"),
        (2, f"key:{viewer_id} (vera)", "auth.denied", "GET /api/v1/audit", "403"),
        (3, f"key:{admin_id} (admin)", "key.revoke", f"key:{viewer_id}", "ok"),
    ]
    assert page["items"][0]["detail"] == {"name": "vera", "role": "viewer"}
    # the caller's request id is echoed and kept; others get one made by the backend
    assert created.headers["X-Request-ID"] == "req-from-the-caller-1"
    assert page["items"][0]["request_id"] == "req-from-the-caller-1"
    assert page["items"][2]["request_id"] == revoked.headers["X-Request-ID"]
    assert page["items"][1]["prev_hash"] == page["items"][0]["hash"]
    assert page["items"][2]["prev_hash"] == page["items"][1]["hash"]
    assert page["next_after_seq"] is None
    assert created.json()["key"] not in str(page)  # AUD-05: never the secret
    assert ([r["seq"] for r in first["items"]], first["next_after_seq"]) == ([1], 1)
    assert [r["seq"] for r in rest["items"]] == [2, 3]

    await cluster.stop()  # a clean stop writes the final checkpoint
    data_dir = str(cluster.data_dir)
    intact = workfleet("audit", "verify", "--data-dir", data_dir)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit log intact: 3 records, 1 checkpoints" in intact.stdout
    tail = workfleet("audit", "tail", "-n", "1", "--data-dir", data_dir)
    assert tail.returncode == 0, tail.stderr
    assert "key.revoke" in tail.stdout
    assert "key.create" not in tail.stdout
    rotated = workfleet("audit", "rotate-key", "--data-dir", data_dir)
    assert rotated.returncode == 0, rotated.stderr
    still = workfleet("audit", "verify", "--data-dir", data_dir)
    assert still.returncode == 0, still.stdout + still.stderr  # the old key's checkpoint verifies

    with closing(sqlite3.connect(cluster.data_dir / "workfleet.db")) as conn, conn:
        conn.execute("DROP TRIGGER audit_records_no_update")
        conn.execute("UPDATE audit_records SET outcome = 'not_found' WHERE seq = 3")
    damaged = workfleet("audit", "verify", "--data-dir", data_dir)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert "seq 3: edited" in damaged.stdout
    assert "seq 1" not in damaged.stdout and "seq 2" not in damaged.stdout
