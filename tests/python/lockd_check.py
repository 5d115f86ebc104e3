#!/usr/bin/python3
"""Uses the public lockd API from Python, over TLS, from the protos alone.

The external check of docs/security.md: a second language (Debian's
python3-grpcio and python3-protobuf) generates its messages from
protos/lockd.proto, follows the leader, opens a session, keeps it alive,
writes, locks, fences and closes, and is refused without the session's
secret. Prints "python client: ok" and exits 0, or names the step that
failed and exits 1.

  lockd_check.py --endpoints=H:P,... --ca=CA.pem [--cert=C --key=K]
                 --protos=DIR --out=DIR
"""

import argparse
import os
import random
import subprocess
import sys
import threading

import grpc

LEADER_KEY = "lockd-leader-address"


def generate(protos, out):
    subprocess.run(
        ["protoc", f"-I{protos}", f"--python_out={out}",
         os.path.join(protos, "lockd.proto")],
        check=True)
    sys.path.insert(0, out)
    import lockd_pb2  # pylint: disable=import-outside-toplevel
    return lockd_pb2


class Cell:
    """Calls at the leader, following the redirects followers answer with."""

    def __init__(self, endpoints, credentials):
        self.endpoints = endpoints
        self.credentials = credentials
        self.channels = {}
        self.address = endpoints[0]

    def channel(self, address):
        if address not in self.channels:
            self.channels[address] = grpc.secure_channel(
                address, self.credentials)
        return self.channels[address]

    def call(self, service, method, request, response_type):
        last = None
        for attempt in range(30):
            rpc = self.channel(self.address).unary_unary(
                f"/lockd.v1.{service}/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_type.FromString)
            try:
                return rpc(request, timeout=5)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = error
                leader = dict(error.trailing_metadata() or ()).get(LEADER_KEY)
                self.address = leader or self.endpoints[
                    (attempt + 1) % len(self.endpoints)]
        raise last

    def keep_alive(self, request, response_type):
        rpc = self.channel(self.address).stream_stream(
            "/lockd.v1.Sessions/KeepAlive",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString)
        answered = threading.Event()

        def requests():
            yield request
            # The stream stays open until the answer came: a client that
            # hangs up first ends the stream.
            answered.wait(10)

        responses = rpc(requests(), timeout=10)
        try:
            return next(iter(responses))
        finally:
            answered.set()


def check(condition, step):
    if not condition:
        print(f"python client: FAILED at {step}")
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--protos", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pb = generate(args.protos, args.out)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key) if args.key else None,
        certificate_chain=read(args.cert) if args.cert else None)
    cell = Cell(args.endpoints.split(","), credentials)

    session = cell.call(
        "Sessions", "CreateSession",
        pb.CreateSessionRequest(ttl_ms=10000, client_name="python check",
                                nonce=random.getrandbits(63) | 1),
        pb.CreateSessionResponse)
    check(len(session.session_secret) == 32, "CreateSession: a 32-byte secret")
    secret = session.session_secret
    number = iter(range(1, 100))

    def header():
        return pb.RequestHeader(session_id=session.session_id,
                                session_secret=secret,
                                request_id=next(number))

    alive = cell.keep_alive(
        pb.KeepAliveRequest(session_id=session.session_id,
                            session_secret=secret),
        pb.KeepAliveResponse)
    check(alive.lease_remaining_ms > 0, "KeepAlive: a lease")

    cell.call("Nodes", "Create",
              pb.CreateNodeRequest(header=header(), path="/python",
                                   content=b"from python"),
              pb.CreateNodeResponse)
    node = cell.call("Nodes", "Get", pb.GetNodeRequest(path="/python"),
                     pb.GetNodeResponse)
    check(node.content == b"from python", "Nodes.Get: the content written")

    acquired = cell.call(
        "Locks", "Acquire",
        pb.AcquireRequest(header=header(), path="/python",
                          mode=pb.EXCLUSIVE),
        pb.AcquireResponse)
    fenced = cell.call(
        "Locks", "CheckSequencer",
        pb.CheckSequencerRequest(sequencer=acquired.sequencer),
        pb.CheckSequencerResponse)
    check(fenced.valid, "Locks.CheckSequencer: the holder's sequencer")

    release = pb.ReleaseRequest(header=header(), path="/python")
    forged = pb.ReleaseRequest()
    forged.CopyFrom(release)
    forged.header.session_secret = b"not the secret"
    try:
        cell.call("Locks", "Release", forged, pb.ReleaseResponse)
        check(False, "Locks.Release without the secret: refused")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.PERMISSION_DENIED and
              "wrong or missing secret" in error.details(),
              f"Locks.Release without the secret: {error.details()}")
    cell.call("Locks", "Release", release, pb.ReleaseResponse)
    cell.call("Sessions", "CloseSession",
              pb.CloseSessionRequest(header=header()),
              pb.CloseSessionResponse)
    print(f"python client: ok (session {session.session_id}, leader "
          f"{cell.address})")


if __name__ == "__main__":
    main()
