from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
H100_TRACE = FIXTURES / "h100-trace-1"


@pytest.fixture
def h100_trace() -> Path:
    return H100_TRACE
