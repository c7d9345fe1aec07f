"""The storage backends' conformance suite (tests/unit/storage/test_backend.cpp)
run again against real servers: redis-server and moto's S3 server (with
SigV4 authentication enforced, so every signature is checked by moto)."""
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MITHRIL = os.environ.get("MITHRIL_BIN", str(REPO / "build" / "mithril"))
UNIT_TESTS = str(pathlib.Path(MITHRIL).with_name("mithril_tests"))

pytestmark = pytest.mark.skipif(not os.path.exists(UNIT_TESTS), reason="mithril_tests not built")


def test_backend_conformance_on_real_servers(redis_server, s3_server):
    bucket = s3_server.bucket("conformance-" + os.urandom(4).hex())
    env = {**os.environ, **s3_server.env(),
           "MITHRIL_TEST_STORAGE_URLS": f"{redis_server.url(3, 'conf')},s3://{bucket}/conf"}
    p = subprocess.run([UNIT_TESTS, "--gtest_filter=Backends/*"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "redis1" in p.stdout and "s32" in p.stdout  # both really ran
    assert "[  PASSED  ]" in p.stdout
    # Nothing left behind: aborted uploads, temporaries, test objects.
    assert s3_server.keys(bucket) == []
    assert s3_server.multipart_uploads(bucket) == []


def test_unit_suite_sees_wrong_credentials_as_a_clear_error(s3_server):
    bucket = s3_server.bucket("wrongkey-" + os.urandom(4).hex())
    env = {**os.environ, **s3_server.env(), "AWS_SECRET_ACCESS_KEY": "wrong",
           "MITHRIL_TEST_STORAGE_URLS": f"s3://{bucket}/x"}
    p = subprocess.run([UNIT_TESTS, "--gtest_filter=Backends/*PutGet*s3*"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0
    assert f"{s3_server.endpoint}/{bucket}: access denied (HTTP 403 SignatureDoesNotMatch" in p.stdout, p.stdout
