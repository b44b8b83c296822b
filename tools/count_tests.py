#!/usr/bin/env python3
"""Counts the test cases of one `bazel test` run from its build event protocol file.

    python3 tools/count_tests.py STAGE BEP.json [--totals FILE]

For every test target the run reported, reads that target's test.xml (named in the BEP event,
so stale files from other runs are never counted): each gtest case passed, failed or skipped;
a target that failed without a gtest report (a crash, a timeout: Bazel writes a stand-in
test.xml with an <error>) counts as one failure. Prints one line for the stage and, with
--totals, adds the counts to FILE (three integers) so .ci/run can print the grand total.
"""

import json
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET


def parse_bep(path):
    results = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ev = json.loads(line)
            tr = ev.get("testResult")
            if tr is None:
                continue
            label = ev["id"]["testResult"]["label"]
            xml_path = None
            for out in tr.get("testActionOutput", []):
                if out.get("name") == "test.xml":
                    xml_path = urllib.parse.unquote(urllib.parse.urlparse(out["uri"]).path)
            results.append((label, tr.get("status", "?"), xml_path))
    return results


def count_xml(path):
    """Returns (passed, failed, skipped, crashed, failed_names) for one test.xml."""
    passed = failed = skipped = 0
    crashed = False
    names = []
    tree = ET.parse(path)
    for case in tree.iter("testcase"):
        if case.find("error") is not None and case.get("classname") in (None, ""):
            crashed = True  # Bazel's stand-in report for a binary that wrote none
            names.append(case.get("name", "?"))
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            names.append("%s.%s" % (case.get("classname"), case.get("name")))
        elif case.find("skipped") is not None or case.get("result") == "skipped" or \
                case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, crashed, names


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    stage, bep = sys.argv[1], sys.argv[2]
    totals = None
    if len(sys.argv) == 5 and sys.argv[3] == "--totals":
        totals = sys.argv[4]
    passed = failed = skipped = crashed = 0
    failures = []
    for label, status, xml_path in parse_bep(bep):
        if xml_path is None or not os.path.exists(xml_path):
            if status != "PASSED":
                crashed += 1
                failures.append("%s (%s, no test.xml)" % (label, status))
            continue
        p, f, s, c, names = count_xml(xml_path)
        if c or (status not in ("PASSED", "FLAKY") and f == 0):
            crashed += 1
            failures.append("%s (%s without a gtest report)" % (label, status))
        passed += p
        failed += f
        skipped += s
        failures.extend("%s: %s" % (label, n) for n in names if not c)
    print("[%s] %d passed, %d failed, %d crashed targets, %d skipped" %
          (stage, passed, failed, crashed, skipped))
    for f in failures:
        print("[%s]   FAILED %s" % (stage, f))
    if totals:
        t = [0, 0, 0]
        if os.path.exists(totals):
            with open(totals) as fh:
                t = [int(x) for x in fh.read().split()]
        t[0] += passed
        t[1] += failed + crashed
        t[2] += skipped
        with open(totals, "w") as fh:
            fh.write("%d %d %d\n" % tuple(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
