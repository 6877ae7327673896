"""Session-wide test setup for rl.

Environment (ci/test-host.sh sets all of these):
  RL_TEST_REGISTRY     host:port of a plain-HTTP Distribution registry to push the
                       fixture images to. Unset: tests needing it are skipped.
  RL_TEST_DEBIAN_TAR   a Debian rootfs tar for the ``debian_image`` fixture.
  RL_TEST_NOSUB_USER   a user with no subordinate ID ranges (``nosub_user``).
  RL_TEST_CACHE_DIR    where built blobs are cached (default ~/.cache/rl-tests).

Fixtures: registry_address, registry_client, fixture_images, debian_image,
registry_factory, nosub_user. Builders for your own images: ``from tests.fixtures import ...``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import (
    FixtureImage,
    RegistryClient,
    RegistryServer,
    build_debian,
    push_image,
    push_standard_images,
    run_once,
    shared_directory,
    start_registry,
)
from tests.fixtures.registry_server import registry_binary

REGISTRY_ENV = "RL_TEST_REGISTRY"
DEBIAN_TAR_ENV = "RL_TEST_DEBIAN_TAR"
NOSUB_USER_ENV = "RL_TEST_NOSUB_USER"

_NO_REGISTRY = f"{REGISTRY_ENV} is not set (sudo ci/test-host.sh sets it; or export {REGISTRY_ENV}=host:port)"
_NO_DEBIAN = f"{DEBIAN_TAR_ENV} is not set (sudo ci/test-host.sh builds one with debootstrap)"


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        import rootless

        where = str(Path(rootless.__file__).parent)
    except ImportError as error:  # pragma: no cover - shown in the header only
        where = f"not importable ({error})"
    return [
        f"rootless: {where}",
        f"{REGISTRY_ENV}={os.environ.get(REGISTRY_ENV, '')} {DEBIAN_TAR_ENV}={os.environ.get(DEBIAN_TAR_ENV, '')}"
        f" {NOSUB_USER_ENV}={os.environ.get(NOSUB_USER_ENV, '')}",
    ]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per missing test resource, however many tests it skipped."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        for reason in (_NO_REGISTRY, _NO_DEBIAN):
            if reason in message:
                counts[reason] = counts.get(reason, 0) + 1
    for reason, count in counts.items():
        terminalreporter.write_line(f"{count} test(s) skipped: {reason}", yellow=True)


_REGISTRY_FIXTURES = {"registry_address", "registry_client", "fixture_images", "debian_image"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _REGISTRY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def registry_address() -> str:
    """host:port of the shared test registry ($RL_TEST_REGISTRY), else skip."""
    address = os.environ.get(REGISTRY_ENV, "").strip()
    if not address:
        pytest.skip(_NO_REGISTRY)
    return address


@pytest.fixture(scope="session")
def registry_client(registry_address: str) -> RegistryClient:
    return RegistryClient(registry_address)


@pytest.fixture(scope="session")
def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_directory(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def fixture_images(registry_client: RegistryClient, _shared_dir: Path) -> dict[str, FixtureImage]:
    """The standard images (fixtures.images.STANDARD_IMAGES), pushed once per
    run and registry, shared by all xdist workers. Keys: busybox, busybox-zstd,
    busybox-uncompressed, multilayer, multiarch."""

    def push() -> dict[str, Any]:
        return {name: image.to_json() for name, image in push_standard_images(registry_client).items()}

    raw = run_once(_shared_dir, f"standard-images@{registry_client.address}", push)
    return {name: FixtureImage.from_json(data) for name, data in raw.items()}


@pytest.fixture(scope="session")
def debian_image(registry_client: RegistryClient, _shared_dir: Path) -> FixtureImage:
    """rltest/debian:bookworm built from $RL_TEST_DEBIAN_TAR (one gzip layer,
    cached between runs), pushed once per run; skipped when the variable is unset."""
    tar = os.environ.get(DEBIAN_TAR_ENV, "").strip()
    if not tar:
        pytest.skip(_NO_DEBIAN)

    def push() -> dict[str, Any]:
        return push_image(registry_client, build_debian(Path(tar))).to_json()

    return FixtureImage.from_json(run_once(_shared_dir, f"debian@{registry_client.address}@{tar}", push))


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """Start extra registries: ``registry_factory(htpasswd_users={...}, config={...})``
    takes start_registry's keyword arguments; all stop when the test ends."""
    if registry_binary() is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**options: Any) -> RegistryServer:
            nonlocal count
            count += 1
            return stack.enter_context(start_registry(tmp_path / f"registry-{count}", **options))

        yield start


@pytest.fixture(scope="session")
def nosub_user() -> str:
    """Name of a user without subordinate ID ranges ($RL_TEST_NOSUB_USER)."""
    name = os.environ.get(NOSUB_USER_ENV, "").strip()
    if not name:
        pytest.skip(f"{NOSUB_USER_ENV} is not set (sudo ci/test-host.sh creates rlnosub)")
    return name
