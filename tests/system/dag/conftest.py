"""Fixtures of the DAG tests: `dag_bed(n)` builds a test bed of n servers (1 to 4) in network
namespaces with a real etcd (dagbed.py says how); `dag` is a bed of three servers. Root only:
without root, iproute2 or etcd the tests skip and say why. Everything a bed made is removed at
teardown, however the test ended; a failing test shows the tail of every daemon's log and keeps
the bed's temp directory (so does OMBRA_KEEP_TMP=1)."""
import pytest

from dag import dagbed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for bed in getattr(item, "_ombra_dag_beds", ()):
            rep.sections.append((f"DAG test bed {bed.rand} logs", bed.logs()))


@pytest.fixture
def dag_bed(build_dir, request):
    """dag_bed(n=3, etcd_members=1) -> a started dagbed.Bed: bed.a .. bed.d (dagbed.Server),
    bed.etcd_url. Beds a test did not close are closed at its teardown."""
    reason = dagbed.skip_reason()
    if reason:
        pytest.skip(reason)
    beds = []
    request.node._ombra_dag_beds = beds

    def make(n=3, etcd_members=1):
        bed = dagbed.Bed(build_dir, n, etcd_members)
        beds.append(bed)
        return bed.start()

    yield make
    keep = getattr(request.node, "_ombra_failed", False)
    failures = []
    for bed in beds:
        try:
            bed.close(keep=keep)
        except BaseException as e:  # every bed is closed even when one fails
            failures.append(str(e))
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def dag(dag_bed):
    """A bed of three servers a, b, c (store and vssd running in each) and one etcd member."""
    return dag_bed(3)
