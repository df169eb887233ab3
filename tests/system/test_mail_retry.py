"""`ombra mail deliver --json` and `--retry SECONDS` (issue 19) on one server: the reply says who
acknowledged the message and when; with --retry a delivery rides out a store that is
restarting, and one that stays away ends with exit 75 (EX_TEMPFAIL) and one line after SECONDS,
the exit a mail server takes as "try again later"."""
import json
import threading
import time


def deliver(store, *opts, body=b"Subject: hi\n\nhello\n", check=True):
    t0 = time.monotonic()
    r = store.ombra("mail", "deliver", "db1", "box", *opts, input=body, check=check)
    return r, time.monotonic() - t0


def test_deliver_json_says_who_acknowledged_it_and_retry_rides_out_a_restart(store):
    store.ombra("db", "new", "db1")
    before = time.time_ns()
    r, _ = deliver(store, "--json")
    ack = json.loads(r.out)
    assert set(ack) == {"id", "server", "epoch", "acked_ns", "json_version"}, ack
    assert ack["server"] == "srv1" and ack["epoch"] == 0  # no DAG: no epoch
    assert before <= ack["acked_ns"] <= time.time_ns()
    assert store.get("db1", "box", ack["id"]) == b"Subject: hi\n\nhello\n"

    # The store is away: without --retry the error at once (exit 1); with --retry 1, tried
    # again for a second, then exit 75 with one line.
    assert store.stop() == 0
    r, _ = deliver(store, check=False)
    assert r.rc == 1 and r.err.count("\n") == 1, r.describe()
    r, took = deliver(store, "--retry", "1", check=False)
    assert r.rc == 75 and r.err.count("\n") == 1 and "nothing listens" in r.err, r.describe()
    assert 0.8 <= took < 5, took

    # The store comes back while the delivery retries: delivered once.
    t = threading.Timer(1.5, store.start)
    t.start()
    try:
        r, took = deliver(store, "--retry", "30", "--json", body=b"Subject: later\n\nlater\n")
    finally:
        t.join()
    assert r.rc == 0 and took >= 1.4, r.describe()
    later = json.loads(r.out)
    assert store.get("db1", "box", later["id"]) == b"Subject: later\n\nlater\n"
    assert len(store.messages("db1", "box")) == 2

    # --retry takes seconds.
    r, _ = deliver(store, "--retry", "soon", check=False)
    assert r.rc == 2 and "--retry must be a number" in r.err, r.describe()
