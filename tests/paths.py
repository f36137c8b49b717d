"""Where the test suite's fixtures live, named once for every test module."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
H100_TRACE = FIXTURES / "h100-trace-1"  # a real H100 recording with exact ground truth
TAMPER = FIXTURES / "tamper"  # bundles carrying one attack each (tamper/make_fixtures.py)
