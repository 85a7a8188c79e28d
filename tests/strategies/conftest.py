from tests.flows.conftest import services  # noqa: F401 - the shared fixture
