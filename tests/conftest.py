"""Shared by tests/integration and tests/python.

In CI (CI=true, as .ci/run sets) a skip is a failure: every skip in these
suites means a missing dependency (redis-server, moto, g++, torch, a binary
not built), and a CI run that silently tests less is a broken CI run. Outside
CI the skips stay skips, with their reason.
"""
import os

import pytest


def in_ci():
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _reason(longrepr):
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return longrepr[2]
    return str(longrepr)


def _fail_skip(report, where):
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a skip is a failure in CI ({where}): {_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result(), collector.nodeid)
