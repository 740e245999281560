from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder decides the marker (unit | integration), so no test forgets one."""
    for item in items:
        tier = item.path.relative_to(TESTS_DIR).parts[0]
        if tier in ("unit", "integration"):
            item.add_marker(tier)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly: no WORKFLEET_* from the developer's shell."""
    import os

    for name in list(os.environ):
        if name.startswith("WORKFLEET_"):
            monkeypatch.delenv(name)
