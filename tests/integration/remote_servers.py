"""Real servers for the remote-tier tests, started and stopped by the tests
themselves on loopback (CI has no services): redis-server (Debian package)
and moto's S3 server (`moto[server]` from PyPI, a real HTTP endpoint that
speaks the S3 REST API and, with authentication switched on, checks every
request's SigV4 signature against IAM credentials it issued).

Also a counting HTTP proxy in front of moto, so that tests measure the bytes
a command really fetched, independently of Mithril's own statistics.
"""
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=20.0, what="server"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


def have_redis():
    return shutil.which("redis-server") is not None


def have_moto():
    try:
        import moto.server  # noqa: F401
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


class RedisServer:
    """redis-server on a free loopback port, no persistence."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mithril-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, what="redis-server")

    def url(self, db=0, prefix=""):
        return f"redis://127.0.0.1:{self.port}/{db}" + (f"/{prefix}" if prefix else "")

    def command(self, *args):
        """One command over RESP; returns the raw reply bytes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            req = f"*{len(args)}\r\n".encode()
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                req += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(req)
            s.settimeout(5)
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"$") and not data.startswith(b"$-1"):
                n = int(data[1:data.index(b"\r\n")])
                head = data.index(b"\r\n") + 2
                while len(data) < head + n + 2:
                    data += s.recv(1 << 16)
                return data[head:head + n]
            return data

    def ping(self):
        return self.command("PING").startswith(b"+PONG")

    def keys(self, pattern="*"):
        raw = self.command("KEYS", pattern)
        # *N\r\n$len\r\nkey\r\n...
        lines = raw.split(b"\r\n")
        return sorted(l.decode() for l in lines[2::2] if l)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class MotoS3Server:
    """moto's S3 server with authentication on: an IAM user with an s3:*
    policy and an access key are created first, then every request must be
    signed with that key (moto recomputes the SigV4 signature). With
    auth=False (benchmarks that compare with unsigned curl transfers) moto
    accepts anything."""

    region = "us-east-1"

    def __init__(self, auth=True):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for(lambda: urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).status == 200,
                 what="moto S3 server")
        import boto3
        if not auth:
            self.access_key, self.secret_key = "bench", "bench-secret"
            self.s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                                   aws_secret_access_key=self.secret_key, region_name=self.region)
            return
        boot = dict(endpoint_url=self.endpoint, aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                    region_name=self.region)
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="mithril-test")
        iam.put_user_policy(UserName="mithril-test", PolicyName="s3-all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="mithril-test")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                               aws_secret_access_key=self.secret_key, region_name=self.region)

    def env(self, endpoint=None):
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_ENDPOINT_URL": endpoint or self.endpoint}

    def bucket(self, name):
        self.s3.create_bucket(Bucket=name)
        return name

    def keys(self, bucket, prefix=""):
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)

    def multipart_uploads(self, bucket):
        return self.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class CountingProxy:
    """HTTP reverse proxy that forwards every request unchanged (the Host
    header too, so SigV4 signatures stay valid) and records, per request,
    the method, path, Range header and response body size."""

    def __init__(self, target_port, delay=0.0):
        self.requests = []  # completed
        self.started = []   # (method, path) as they arrive
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                with lock:
                    outer.started.append((self.command, self.path))
                if delay and self.command in ("PUT", "POST"):
                    time.sleep(delay)  # a slow link, so that a test can interrupt an upload
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with lock:
                    outer.requests.append({"method": self.command, "path": self.path,
                                           "range": self.headers.get("Range"), "status": resp.status,
                                           "bytes": len(data)})
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)) if self.command != "HEAD"
                                 else resp.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _safe_forward(self):
                try:
                    self._forward()
                except (OSError, http.client.HTTPException):
                    self.close_connection = True  # the client went away (a test killed it)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _safe_forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self):
        self.requests.clear()
        self.started.clear()

    def bytes_fetched(self):
        return sum(r["bytes"] for r in self.requests if r["method"] == "GET")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
