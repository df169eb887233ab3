"""The DAG on an etcd with client-certificate authentication (ARCHITECTURE.md, "Certificates";
docs/design.md, "etcd with client certificates"): etcd trusts the DAG's CA only; the servers'
ombra-repld and the ombra CLI present their certificate of the DAG and check etcd's against the
DAG's ca.crt. Bootstrap as the design says: `dag init` and `add-server` on the etcd before it
requires certificates (the CA is made there), etcd's own certificate issued from the DAG's CA,
etcd restarted with --client-cert-auth, the services started on https."""
import subprocess

from dag.conftest import copies_match, roll
from dag.test_replication import DAG, setup_dag


def openssl(*args):
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def test_etcd_refuses_a_client_without_a_certificate_of_the_dag_and_the_dag_works(dag_bed,
                                                                                  tmp_path):
    bed = dag_bed(2)
    a, b = bed.a, bed.b
    setup_dag(bed, [a, b])
    for s in (a, b):
        s.term("repld")
    dagdir = a.home / "dag"
    ip = bed.etcd[0].ip
    key, csr, crt, ext = (tmp_path / f"etcd.{x}" for x in ("key", "csr", "crt", "ext"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            key, "-out", csr, "-subj", f"/O={DAG}/CN=etcd")
    # clientAuth too: etcd 3.4's JSON gateway dials etcd's own gRPC port with this certificate
    ext.write_text(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", dagdir / "ca.crt", "-CAkey", dagdir / "ca.key",
            "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    bed.etcd_use_tls(dagdir / "ca.crt", crt, key, dagdir / "server.crt", dagdir / "server.key")
    url = bed.etcd_url
    assert url.startswith("https://")

    # a client without a certificate of the DAG gets no answer: the handshake is refused
    body = ["-d", '{"key":"L29tYnJh","range_end":"L29tYnJi"}']
    r = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", dagdir / "ca.crt",
                        url + "/v3/kv/range", *body], capture_output=True, text=True)
    assert r.returncode != 0 and "kvs" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    # nor one with a certificate of another authority
    other_key, other = tmp_path / "o.key", tmp_path / "o.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", other_key, "-out", other, "-subj", "/O=other/CN=b", "-days", "2")
    r = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", dagdir / "ca.crt", "--cert",
                        other, "--key", other_key, url + "/v3/kv/range", *body],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "kvs" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    # the same request with a's certificate of the DAG is answered
    r = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", dagdir / "ca.crt", "--cert",
                        dagdir / "server.crt", "--key", dagdir / "server.key",
                        url + "/v3/kv/range", *body], capture_output=True, text=True)
    assert r.returncode == 0 and "kvs" in r.stdout, (r.returncode, r.stdout, r.stderr)

    # the DAG works on https: the stores (their directory in etcd since they joined) restarted
    # with the new endpoints, the replication services, status, a copy seeded and replicated
    for s in (a, b):
        s.restart("store")
        s.start_repld(etcd=url)
    assert "etcd at " + url in a.stderr(), a.stderr()
    st = a.ombra("dag", "status", "--etcd", url)
    assert "connected" in st.out and "server b" in st.out, st.describe()
    a.ombra("db", "new", "db1")
    a.ombra("db", "copy", "add", "db1", "--server", "b", "--etcd", url)
    roll(a, "db1", 2)
    copies_match(bed, a, "db1", [b])

    # a CLI whose $OMBRA_HOME holds no certificate of the DAG is refused in one line
    (tmp_path / "empty").mkdir()
    r = a.ombra("dag", "status", "--etcd", url, env={"OMBRA_HOME": str(tmp_path / "empty")},
                check=False)
    assert r.rc != 0 and r.err.count("\n") == 1 and ".crt" in r.err, r.describe()
