"""A pytest plugin for parity tests of your own port (registered through the `pytest11` entry point, so it
is active wherever poincare-parity is installed).

    def test_my_layer(parity):
        records = parity.check_module(MyJaxLayer(...), MyTorchLayer(...), inputs=(x,))
        parity.assert_ok()          # or parity.assert_parity(records)

The `parity` fixture gives the public checks (check_function, check_module, check_optimizer) and keeps
every record they return; `parity.assert_ok()` raises `ParityError` if any failed. The fixture shadows
the package's name inside a test, so it also carries what the checks take: `parity.inputs`,
`parity.Tolerance`, `parity.Float64Oracle`, `parity.Case`, `parity.load_torch_state_dict`. When a test
fails, its parity table (and, for a module, the per-layer table) is added to the test's report. With
`--parity-json DIR`, every test's records are written to DIR/<test name>.json as a `custom` suite that
`poincare-parity report DIR` turns into a report.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parity import checks, convert
from parity.checks.module import ModuleRecords
from parity.compare import ParityError, Records, Tolerance, assert_parity


class ParityFixture:
    """The checks of `parity.checks`, each call's records kept for the test's report."""

    def __init__(self):
        self.records = Records()
        self.layer_tables: list[str] = []

    def _keep(self, records: Records) -> Records:
        self.records.extend(records)
        if isinstance(records, ModuleRecords) and records.layers:
            self.layer_tables.append(records.layer_table())
        return records

    def check_function(self, *args, **kwargs) -> Records:
        return self._keep(checks.check_function(*args, **kwargs))

    def check_module(self, *args, **kwargs) -> ModuleRecords:
        return self._keep(checks.check_module(*args, **kwargs))

    def check_optimizer(self, *args, **kwargs) -> Records:
        return self._keep(checks.check_optimizer(*args, **kwargs))

    assert_parity = staticmethod(assert_parity)
    load_torch_state_dict = staticmethod(convert.load_torch_state_dict)
    # what the checks take, since the fixture hides the package's name inside a test
    inputs = checks.inputs
    Tolerance = Tolerance
    Float64Oracle = checks.Float64Oracle
    Case = checks.Case
    ParityError = ParityError

    def assert_ok(self) -> None:
        """Raise `ParityError` if any record of this test failed."""
        assert_parity(self.records)


def pytest_addoption(parser):
    group = parser.getgroup("poincare-parity")
    group.addoption("--parity-json", metavar="DIR", default=None,
                    help="write each test's parity records to DIR/<test>.json (a custom suite for "
                         "`poincare-parity report`)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    fixture = getattr(item, "_parity_fixture", None)
    if fixture is None or report.when != "call" or not report.failed or not fixture.records:
        return
    report.sections.append(("parity records", fixture.records.table()))
    for table in fixture.layer_tables:
        report.sections.append(("parity layers", table))


@pytest.fixture
def parity(request) -> ParityFixture:
    """The public parity checks, their records kept for this test (see `parity.pytest_plugin`)."""
    fixture = ParityFixture()
    request.node._parity_fixture = fixture
    yield fixture
    folder = request.config.getoption("--parity-json")
    if folder and fixture.records:
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        fixture.records.save(str(Path(folder) / f"{name}.json"), name=request.node.nodeid)
