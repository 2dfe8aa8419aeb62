"""JUnit XML, the format every CI system shows: one testcase per scenario run (``--repeat N``: N per scenario,
each named with its run and fault seed, so a CI's flaky-test view sees them as one test run N times)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..runner import ScenarioResult


def write_junit(results: list[ScenarioResult], path: Path, suite: str = "rtsip") -> None:
    failures = sum(1 for r in results if not r.passed and not r.verdict.startswith("error"))
    errors = sum(1 for r in results if r.verdict.startswith("error"))
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=str(failures),
                       errors=str(errors), time=f"{sum(r.seconds for r in results):.3f}")
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=Path(r.file).stem, name=_case_name(r), file=r.file,
                           time=f"{r.seconds:.3f}")
        if not r.passed:
            tag = "error" if r.verdict.startswith("error") else "failure"
            el = ET.SubElement(tc, tag, message=r.verdict[:500])
            lines = [f"{'PASS' if c.ok else 'FAIL'} {c.describe()}" for c in r.checks]
            el.text = "\n".join([r.verdict, *lines, *r.notes, *(f"warning: {w}" for w in r.warnings)])
        out = ET.SubElement(tc, "system-out")
        out.text = "\n".join(line for _, line in r.app_output)[-20000:]
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _case_name(r: ScenarioResult) -> str:
    if r.repeats == 1:
        return r.name
    seed = "" if r.fault_seed is None else f", seed {r.fault_seed}"
    return f"{r.name} [run {r.repeat + 1}/{r.repeats}{seed}]"
