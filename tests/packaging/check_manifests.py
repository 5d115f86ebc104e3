#!/usr/bin/python3
"""Checks the deployment files in docker/ without a network or a cluster.

Parses the Kubernetes manifests (docker/k8s/*.yaml), the compose files
(docker/compose-*.yaml), the Dockerfile and the systemd unit with its
example environment file, and checks that they agree with each other and
with the shapes Kubernetes and compose expect: names, selectors, ports,
volumes, and a --members list that names every replica exactly once. If
kubeconform or kubeval is installed and LOCKD_K8S_SCHEMAS names local JSON
schemas, it validates the manifests against them too (never downloading).
Prints "packaging: ok ..." and exits 0, or lists every problem and exits 1.

  check_manifests.py [--root=REPOSITORY]

Needs PyYAML (Debian: python3-yaml).
"""

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    sys.exit("check_manifests: needs PyYAML (Debian package python3-yaml; "
             "./dev deps installs it)")

NAMESPACE = "lockd"
DATA_DIR = "/var/lib/lockd"
LOCKD = "/usr/local/bin/lockd"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MEMBER = re.compile(r"^(\d+)@([^:/@]+):(\d+)/([^:/@]+):(\d+)$")
API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "StatefulSet": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def flags(args):
    """--name=value arguments as a dict (a bare --name maps to True)."""
    out = {}
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        out[name] = value if eq else True
    return out


def port_of(address):
    return int(address.rsplit(":", 1)[1]) if ":" in address else None


def parse_members(where, text, count):
    """{id: (client_host, client_port, peer_host, peer_port)}; checks that
    the ids are 1..count, each once, and every address distinct."""
    members = {}
    if not isinstance(text, str) or not text:
        problem(where, "no --members")
        return members
    addresses = set()
    for item in text.split(","):
        match = MEMBER.match(item)
        if not match:
            problem(where, f"--members entry {item!r} is not "
                    "id@host:port/host:port")
            continue
        rid = int(match.group(1))
        if rid in members:
            problem(where, f"--members lists id {rid} twice")
        members[rid] = (match.group(2), int(match.group(3)),
                        match.group(4), int(match.group(5)))
        for address in (match.group(2, 3), match.group(4, 5)):
            if address in addresses:
                problem(where, f"--members address {':'.join(address)} "
                        "appears twice")
            addresses.add(address)
    if sorted(members) != list(range(1, count + 1)):
        problem(where, f"--members ids are {sorted(members)}, expected "
                f"1..{count} each once")
    return members


def subset(selector, labels):
    return bool(selector) and all(
        (labels or {}).get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- Kubernetes

def check_k8s(root):
    directory = os.path.join(root, "docker", "k8s")
    files = sorted(glob.glob(os.path.join(directory, "*.yaml")))
    if not files:
        problem("docker/k8s", "no manifests")
        return 0
    objects = []  # (file, object)
    kustomization = None
    for path in files:
        where = os.path.relpath(path, root)
        try:
            docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
        except yaml.YAMLError as error:
            problem(where, f"not YAML: {error}")
            continue
        for doc in docs:
            if not isinstance(doc, dict):
                problem(where, "a document is not a mapping")
                continue
            if doc.get("kind") == "Kustomization":
                kustomization = (where, doc)
                continue
            objects.append((where, doc))
    by_kind = {}
    for where, obj in objects:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        if not kind or not obj.get("apiVersion") or not name:
            problem(where, "needs apiVersion, kind and metadata.name")
            continue
        if kind in API_VERSIONS and obj["apiVersion"] != API_VERSIONS[kind]:
            problem(where, f"{kind} has apiVersion {obj['apiVersion']}, "
                    f"expected {API_VERSIONS[kind]}")
        if not DNS_LABEL.match(name):
            problem(where, f"metadata.name {name!r} is not a DNS label")
        namespace = obj["metadata"].get("namespace")
        if kind != "Namespace" and namespace != NAMESPACE:
            problem(where, f"{kind}/{name} is not in namespace {NAMESPACE}")
        if not isinstance(obj.get("spec", {}), dict):
            problem(where, f"{kind}/{name}: spec is not a mapping")
            continue
        by_kind.setdefault(kind, {})[name] = (where, obj)

    if NAMESPACE not in by_kind.get("Namespace", {}):
        problem("docker/k8s", f"no Namespace {NAMESPACE}")
    if kustomization is None:
        problem("docker/k8s", "no kustomization.yaml")
    else:
        where, doc = kustomization
        listed = sorted(doc.get("resources") or [])
        present = sorted(os.path.basename(f) for f in files
                         if os.path.basename(f) != "kustomization.yaml")
        if listed != present:
            problem(where, f"resources {listed} are not the manifests "
                    f"{present}")
        if doc.get("namespace", NAMESPACE) != NAMESPACE:
            problem(where, f"namespace must stay {NAMESPACE} (--members "
                    "names it)")

    sets = by_kind.get("StatefulSet", {})
    if len(sets) != 1:
        problem("docker/k8s", f"expected one StatefulSet, found {len(sets)}")
        return len(objects)
    (sts_name, (where, sts)), = sets.items()
    spec = sts["spec"]
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    pod = template.get("spec") or {}
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 1 or replicas % 2 == 0:
        problem(where, f"replicas {replicas!r}: a cell needs an odd number")
        replicas = 3
    if not subset((spec.get("selector") or {}).get("matchLabels"), labels):
        problem(where, "spec.selector.matchLabels do not match the "
                "template's labels")
    if spec.get("podManagementPolicy") != "Parallel":
        problem(where, "podManagementPolicy must be Parallel (a replica is "
                "ready only once a majority runs)")
    if not pod.get("terminationGracePeriodSeconds", 30) >= 10:
        problem(where, "terminationGracePeriodSeconds too short to hand "
                "leadership over")
    if (pod.get("securityContext") or {}).get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot must be true")

    services = by_kind.get("Service", {})
    peers = services.get(spec.get("serviceName"))
    if peers is None:
        problem(where, f"serviceName {spec.get('serviceName')!r} names no "
                "Service")
    else:
        pspec = peers[1]["spec"]
        if pspec.get("clusterIP") != "None":
            problem(peers[0], "the StatefulSet's Service must be headless "
                    "(clusterIP: None)")
        if pspec.get("publishNotReadyAddresses") is not True:
            problem(peers[0], "publishNotReadyAddresses must be true "
                    "(replicas find each other before they are ready)")

    containers = pod.get("containers") or []
    lockd = next((c for c in containers if c.get("name") == "lockd"), None)
    if lockd is None:
        problem(where, "no container named lockd")
        return len(objects)
    ports = {p.get("name"): p.get("containerPort")
             for p in lockd.get("ports") or []}
    numbers = set(ports.values())

    def declared(port):
        return port in ports if isinstance(port, str) else port in numbers

    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        handler = lockd.get(probe)
        if handler is None:
            if probe != "startupProbe":
                problem(where, f"no {probe}")
            continue
        action = (handler.get("httpGet") or handler.get("tcpSocket")
                  or handler.get("grpc") or {})
        if not declared(action.get("port")):
            problem(where, f"{probe} port {action.get('port')!r} is not a "
                    "containerPort")
    for name, svc in services.items():
        if not subset(svc[1]["spec"].get("selector"), labels):
            problem(svc[0], f"Service {name} selects no replica")
        for port in svc[1]["spec"].get("ports") or []:
            if not declared(port.get("targetPort", port.get("port"))):
                problem(svc[0], f"Service {name} port {port.get('name')} "
                        "targets no containerPort")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        pspec = pdb[1]["spec"]
        if not subset((pspec.get("selector") or {}).get("matchLabels"),
                      labels):
            problem(pdb[0], f"PodDisruptionBudget {name} selects no replica")
        if pspec.get("maxUnavailable", 99) > (replicas - 1) // 2:
            problem(pdb[0], "maxUnavailable would let a majority go")
    if not by_kind.get("PodDisruptionBudget"):
        problem("docker/k8s", "no PodDisruptionBudget")
    for name, policy in by_kind.get("NetworkPolicy", {}).items():
        nspec = policy[1]["spec"]
        if not subset((nspec.get("podSelector") or {}).get("matchLabels"),
                      labels):
            problem(policy[0], f"NetworkPolicy {name} selects no replica")
        for rule in nspec.get("ingress") or []:
            for port in rule.get("ports") or []:
                if not declared(port.get("port")):
                    problem(policy[0], f"NetworkPolicy {name} port "
                            f"{port.get('port')!r} is no containerPort")

    # The command: a shell wrapper that derives --id from the ordinal.
    script = " ".join(lockd.get("command") or []) + " " + " ".join(
        lockd.get("args") or [])
    if "${HOSTNAME##*-} + 1" not in script:
        problem(where, "the command does not derive the id from the pod "
                "ordinal (id=$(( ${HOSTNAME##*-} + 1 )))")
    words = shlex.split(script.replace("\\\n", " "))
    if LOCKD not in words:
        problem(where, f"the command does not run {LOCKD}")
    given = flags(words)
    env = {e.get("name"): e.get("value") for e in lockd.get("env") or []}
    members_text = given.get("members")
    reference = re.fullmatch(r"\$\{?(\w+)\}?|\$\((\w+)\)", members_text or "")
    if reference:
        members_text = env.get(reference.group(1) or reference.group(2))
    members = parse_members(where, members_text, replicas)
    service = spec.get("serviceName")
    for rid, (chost, cport, phost, pport) in members.items():
        host = f"{sts_name}-{rid - 1}.{service}.{NAMESPACE}.svc.cluster.local"
        if chost != host or phost != host:
            problem(where, f"member {rid} should be {host}, not "
                    f"{chost}/{phost}")
        if cport != ports.get("client") or pport != ports.get("peer"):
            problem(where, f"member {rid} ports {cport}/{pport} are not the "
                    "client/peer containerPorts")
    if port_of(str(given.get("listen", ""))) != ports.get("client"):
        problem(where, "--listen is not the client containerPort")
    if port_of(str(given.get("peer_listen", ""))) != ports.get("peer"):
        problem(where, "--peer_listen is not the peer containerPort")
    if port_of(str(given.get("metrics_address", ""))) != ports.get("metrics"):
        problem(where, "--metrics_address is not the metrics containerPort")
    claims = {(t.get("metadata") or {}).get("name")
              for t in spec.get("volumeClaimTemplates") or []}
    volumes = {v.get("name") for v in pod.get("volumes") or []} | claims
    mounts = {m.get("mountPath"): m.get("name")
              for m in lockd.get("volumeMounts") or []}
    for path, name in mounts.items():
        if name not in volumes:
            problem(where, f"volumeMount {path} names no volume {name!r}")
    if mounts.get(given.get("data_dir")) not in claims:
        problem(where, f"--data_dir {given.get('data_dir')!r} is not on a "
                "volumeClaimTemplate")
    return len(objects)


# ------------------------------------------------------------------- compose

def check_compose(root, path):
    where = os.path.relpath(path, root)
    count = int(re.search(r"compose-(\d+)\.yaml$", path).group(1))
    try:
        doc = yaml.safe_load(open(path))
    except yaml.YAMLError as error:
        problem(where, f"not YAML: {error}")
        return
    if not isinstance(doc, dict):
        problem(where, "not a compose file (a mapping with services)")
        return
    services = doc.get("services") or {}
    names = [f"lockd{i}" for i in range(1, count + 1)]
    if sorted(services) != sorted(names):
        problem(where, f"services {sorted(services)}, expected {names}")
    declared_volumes = set(doc.get("volumes") or {})
    declared_networks = set(doc.get("networks") or {})
    members_seen = set()
    host_ports = set()
    for name, svc in services.items():
        at = f"{where}: {name}"
        if not isinstance(svc, dict):
            problem(at, "not a mapping")
            continue
        if not svc.get("image") and not svc.get("build"):
            problem(at, "needs image or build")
        command = svc.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        given = flags(command)
        rid = re.fullmatch(r"lockd(\d+)", name)
        if rid is None or given.get("id") != rid.group(1):
            problem(at, f"--id={given.get('id')} does not match the name")
        members_seen.add(given.get("members"))
        members = parse_members(at, given.get("members"), count)
        listen = port_of(str(given.get("listen", "")))
        peer_listen = port_of(str(given.get("peer_listen", "")))
        for mid, (chost, cport, phost, pport) in members.items():
            if chost not in services or phost != chost:
                problem(at, f"member {mid} names {chost}/{phost}, not a "
                        "service")
            elif chost != f"lockd{mid}":
                problem(at, f"member {mid} is service {chost}")
            if cport != listen or pport != peer_listen:
                problem(at, f"member {mid} ports {cport}/{pport} are not "
                        "--listen/--peer_listen")
        tls = any(k.startswith("tls_") for k in given)
        if not tls and "insecure" not in given:
            problem(at, "neither TLS flags nor --insecure: lockd would "
                    "refuse 0.0.0.0")
        mounts = {}
        for volume in svc.get("volumes") or []:
            source, _, target = str(volume).partition(":")
            target = target.split(":")[0]
            mounts[target] = source
            if not source.startswith(("/", ".")) and \
                    source not in declared_volumes:
                problem(at, f"volume {source} is not declared")
        source = mounts.get(given.get("data_dir"))
        if source is None or source.startswith(("/", ".")):
            problem(at, f"--data_dir {given.get('data_dir')!r} is not on a "
                    "named volume")
        for network in svc.get("networks") or []:
            if network not in declared_networks:
                problem(at, f"network {network} is not declared")
        for mapping in svc.get("ports") or []:
            parts = str(mapping).split(":")
            if int(parts[-1]) != listen:
                problem(at, f"port {mapping} does not reach --listen")
            if parts[-2] in host_ports:
                problem(at, f"host port {parts[-2]} used twice")
            host_ports.add(parts[-2])
            if "insecure" in given and (len(parts) < 3 or
                                        parts[0] != "127.0.0.1"):
                problem(at, f"plaintext port {mapping} published beyond "
                        "127.0.0.1")
    if len(members_seen) > 1:
        problem(where, "the services do not share one --members list")


# ------------------------------------------------- Dockerfile and systemd

def check_dockerfile(root):
    where = "docker/Dockerfile"
    try:
        text = open(os.path.join(root, where)).read()
    except OSError as error:
        problem(where, str(error))
        return
    text = text.replace("\\\n", " ")
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if not stages or not stages[0].startswith("debian:12") or \
            stages[-1] != "debian:12-slim":
        problem(where, f"stages {stages}: build on debian:12, run on "
                "debian:12-slim")
    exposed = set(" ".join(re.findall(r"^EXPOSE\s+(.*)$", text, re.M)).split())
    for port in ("7001", "7101", "9101"):
        if port not in exposed:
            problem(where, f"does not EXPOSE {port}")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1] in ("root", "0"):
        problem(where, "the image must run as a non-root USER")
    if not re.search(r'^ENTRYPOINT\s+\["' + re.escape(LOCKD) + '"', text,
                     re.M):
        problem(where, f"ENTRYPOINT is not {LOCKD}")
    if not re.search(r"^VOLUME\s.*" + re.escape(DATA_DIR), text, re.M):
        problem(where, f"no VOLUME {DATA_DIR}")
    if not re.search(r"^HEALTHCHECK\s", text, re.M):
        problem(where, "no HEALTHCHECK")


def read_unit(path):
    sections = {}
    current = None
    for line in open(path).read().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def check_systemd(root):
    where = "docker/systemd/lockd.service"
    try:
        unit = read_unit(os.path.join(root, where))
    except OSError as error:
        problem(where, str(error))
        return
    for section in ("Unit", "Service", "Install"):
        if section not in unit:
            problem(where, f"no [{section}] section")
    service = unit.get("Service", {})

    def value(key):
        return (service.get(key) or [""])[-1]

    exec_start = value("ExecStart").split()
    if not exec_start or exec_start[0].lstrip("-@:+!") != LOCKD:
        problem(where, f"ExecStart does not run {LOCKD}")
    for key, expected in (("Type", "simple"), ("User", "lockd"),
                          ("KillSignal", "SIGTERM"),
                          ("EnvironmentFile", "/etc/default/lockd"),
                          ("NoNewPrivileges", "yes"),
                          ("ProtectSystem", "strict")):
        if value(key) != expected:
            problem(where, f"{key}={value(key)}, expected {expected}")
    if "$LOCKD_OPTS" not in exec_start:
        problem(where, "ExecStart does not pass $LOCKD_OPTS")
    writable = " ".join(service.get("ReadWritePaths", [])).split()
    if not unit.get("Install", {}).get("WantedBy"):
        problem(where, "[Install] has no WantedBy")

    where = "docker/systemd/lockd.default"
    try:
        text = open(os.path.join(root, where)).read()
    except OSError as error:
        problem(where, str(error))
        return
    match = re.search(r'^LOCKD_OPTS="((?:[^"\\]|\\.|\\\n)*)"', text, re.M)
    if not match:
        problem(where, 'no LOCKD_OPTS="..."')
        return
    given = flags(match.group(1).replace("\\\n", " ").split())
    count = len(str(given.get("members", "")).split(","))
    members = parse_members(where, given.get("members"), count)
    if given.get("id") is None or int(given["id"]) not in members:
        problem(where, f"--id={given.get('id')} is not one of --members")
    if given.get("data_dir") not in writable:
        problem(where, f"--data_dir {given.get('data_dir')!r} is not in the "
                "unit's ReadWritePaths")
    tls = [k for k in ("tls_ca", "tls_cert", "tls_key") if k in given]
    if len(tls) != 3:
        problem(where, "the example must be a TLS replica: --tls_ca, "
                "--tls_cert and --tls_key")


# --------------------------------------------------------------- validators

def run_validators(root):
    """kubeconform/kubeval against local schemas only, if both exist."""
    schemas = os.environ.get("LOCKD_K8S_SCHEMAS", "")
    manifests = [f for f in sorted(glob.glob(
        os.path.join(root, "docker", "k8s", "*.yaml")))
        if not f.endswith("kustomization.yaml")]
    for tool in ("kubeconform", "kubeval"):
        if shutil.which(tool) is None:
            continue
        if not schemas:
            print(f"check_manifests: {tool} found but LOCKD_K8S_SCHEMAS "
                  "(local schemas) is not set: not run")
            continue
        if tool == "kubeconform":
            command = [tool, "-strict", "-summary", "-schema-location",
                       schemas] + manifests
        else:
            command = [tool, "--strict", "--schema-location",
                       "file://" + os.path.abspath(schemas)] + manifests
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            problem(tool, (result.stdout + result.stderr).strip())
        else:
            print(f"check_manifests: {tool}: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    root = os.path.abspath(parser.parse_args().root)
    objects = check_k8s(root)
    composes = sorted(glob.glob(os.path.join(root, "docker",
                                             "compose-*.yaml")))
    if not composes:
        problem("docker", "no compose-N.yaml")
    for path in composes:
        check_compose(root, path)
    check_dockerfile(root)
    check_systemd(root)
    run_validators(root)
    if problems:
        for line in problems:
            print(f"check_manifests: {line}")
        print(f"check_manifests: {len(problems)} problem(s)")
        return 1
    print(f"packaging: ok ({objects} Kubernetes objects, "
          f"{len(composes)} compose files, Dockerfile, systemd unit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
