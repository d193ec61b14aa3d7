import pytest
from telemetry_samples import sample_events

from esper.core.events import Event


@pytest.fixture
def samples() -> list[Event]:
    return sample_events()
