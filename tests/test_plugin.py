"""The pytest plugin from a user's side: a parity test that fails shows its parity table in the report,
`--parity-json` writes records `poincare-parity report` reads, and README's fixture example runs."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

from parity.cli import main as cli

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[1] / "README.md"

USER_TESTS = '''
import jax.numpy as jnp
import torch


def scaled_tanh(x, *, c):
    return jnp.tanh(x * c)


def scaled_tanh_wrong(x, *, c):  # a constant off in its 7th digit
    return jnp.tanh(x * c * (1 + 1e-7))


def reference(x, *, c):
    return torch.tanh(x * c)


def test_port_with_a_wrong_constant(parity):
    parity.check_function(scaled_tanh_wrong, reference, dtypes=["float64"],
                          args={"x": parity.inputs.normal((3, 4)), "c": parity.inputs.constant(0.5)})
    parity.assert_ok()


def test_correct_port(parity):
    parity.check_function(scaled_tanh, reference, dtypes=["float64"],
                          args={"x": parity.inputs.normal((3, 4)), "c": parity.inputs.constant(0.5)})
    parity.assert_ok()
'''


def plugin_args() -> list[str]:
    """Load the plugin by name unless the installed distribution already registers it (pytest11)."""
    installed = any(ep.value == "parity.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "parity.pytest_plugin"]


def test_a_failing_parity_test_reports_its_table_and_writes_json_for_the_report(pytester, tmp_path):
    (readme_example,) = re.findall(r"^```python port-example-pytest\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    pytester.makepyfile(test_user_port=USER_TESTS, test_readme_example=readme_example)
    out = tmp_path / "parity-results"
    # a fresh interpreter: an in-process run would drop the JAX and torch modules it imported from
    # sys.modules when it ends, and importing torch a second time in one process crashes
    result = pytester.runpytest_subprocess(*plugin_args(), "--parity-json", str(out), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)  # README's fixture example passes
    text = result.stdout.str()
    failure = text[text.index("test_port_with_a_wrong_constant ___"):]
    # the failing test's report: the ParityError naming the worst element, then its parity table
    assert "ParityError: Parity failed in 1 of 1 check(s)." in failure
    assert re.search(r"parity records -+\ncheck +dtype +worst at +max abs err +max rel err +tolerance +pass\n", failure)
    assert re.search(r"scaled_tanh_wrong +float64 +(value|grad\.x) bulk regime \(\d, \d\) .* 1e-09 +FAIL", failure)
    assert "test_correct_port ___" not in text  # a passing test shows nothing

    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == ["test_readme_example.py_test_my_scaled_tanh.json",
                                       "test_user_port.py_test_correct_port.json",
                                       "test_user_port.py_test_port_with_a_wrong_constant.json"]
    payloads = [json.loads(f.read_text()) for f in files]
    assert [p["suite"] for p in payloads] == ["custom"] * 3
    assert [[r["passed"] for r in p["records"]] for p in payloads] == [[True, True], [True], [False]]
    assert payloads[2]["name"] == "test_user_port.py::test_port_with_a_wrong_constant"

    # the report takes the folder as it is: every file read as a custom suite, nothing ignored
    report = tmp_path / "report"
    assert cli(["report", str(out), "--out", str(report)]) in (0, 1)  # 1 would be a failed row, not a refusal
    written = json.loads((report / "report.json").read_text())
    assert [entry["kind"] for entry in written["inputs"]] == ["custom"] * 3 and not written.get("ignored")
    assert (report / "report.md").exists()


def test_the_option_is_in_pytest_help(pytester):
    help_text = pytester.runpytest(*plugin_args(), "--help").stdout.str()
    assert "--parity-json=DIR" in help_text and "poincare-parity report" in help_text
