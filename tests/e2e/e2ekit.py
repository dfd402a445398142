"""Helpers for the end-to-end tests: drive real local clusters through the `zeromesh` command.

A module of its own (not conftest.py) so test modules import it by a name that no
other test directory uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed-demo"
if not SEED.exists():
    SEED = Path("/work/shared/seed-demo")


# Manifests several e2e modules apply, written once.
OUTSIDE_CURL = """\
apiVersion: v1
kind: Namespace
metadata: {name: outside}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: curl, namespace: outside}
spec:
  selector: {matchLabels: {app: curl}}
  template:
    metadata: {labels: {app: curl}}
    spec:
      nodeSelector: {name: node1}
      containers: [{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}]
"""
"""A client outside the mesh (an unlabelled namespace) on node1."""

TCP_ECHO = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: tcp, namespace: sample-server}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: sample-server}
spec:
  selector: {app: tcp-echo}
  ports: [{port: 9000, targetPort: 9000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: tcp-echo, namespace: sample-server}
spec:
  selector: {matchLabels: {app: tcp-echo}}
  template:
    metadata: {labels: {app: tcp-echo}}
    spec:
      serviceAccountName: tcp
      nodeSelector: {name: node2}
      containers: [{name: echo, image: zeromesh/tcp-echo, ports: [{containerPort: 9000}]}]
"""
"""A TCP echo service in sample-server on node2, with its own service account `tcp`."""


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Cluster:
    """A running local cluster driven through the real `zeromesh` command."""

    def __init__(self, name: str) -> None:
        self.name = name

    def z(self, *args: str, check: bool = True, input: str | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "zeromesh", "--cluster", self.name, *args],
                              capture_output=True, text=True, input=input, timeout=timeout,
                              cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"zeromesh {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, nodes: int = 2, *extra: str) -> None:
        self.z("up", "--nodes", str(nodes), *extra)

    def down(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.z("down", *extra, check=False)

    def apply(self, *files: str | Path, input: str | None = None) -> str:
        args: list[str] = []
        for f in files:
            args += ["-f", str(f)]
        return self.z("apply", *args, input=input).stdout

    def get(self, kind: str, namespace: str | None = None, name: str | None = None
            ) -> Any:
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if namespace:
            args += ["-n", namespace]
        else:
            args += ["-A"]
        return json.loads(self.z(*args).stdout)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return [p for p in self.get("pods", namespace)["items"]
                if not p["metadata"].get("deletionTimestamp")]

    def wait_ready(self, namespace: str, count: int | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pods = self.pods(namespace)
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p.get("status", {}).get("conditions", []))]
            if pods and len(ready) == len(pods) and (count is None or len(pods) == count):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"pods in {namespace} not ready: "
                                     + json.dumps([(p["metadata"]["name"],
                                                    p.get("status", {}).get("phase"))
                                                   for p in pods]))
            time.sleep(0.1)

    def exec(self, namespace: str, target: str, *cmd: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.z("exec", "-n", namespace, target, "--", *cmd, check=check, timeout=timeout)

    def curl(self, namespace: str, target: str, url: str, *opts: str) -> subprocess.CompletedProcess[str]:
        return self.exec(namespace, target, "curl", "-s", "-m", "5", *opts, url, check=False)


def host_network_view() -> dict[str, str]:
    """What `up` must leave exactly as it was in the host's own namespace."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    return {
        "routes4": out("ip", "-4", "route", "show", "table", "all"),
        "routes6": out("ip", "-6", "route", "show", "table", "all"),
        "rules": out("ip", "rule", "show"),
        "links": "\n".join(sorted(line.split(":")[1].strip() for line in
                                  out("ip", "-o", "link", "show").splitlines())),
        "ruleset": out("nft", "list", "ruleset"),
    }


def leftovers(name: str) -> list[str]:
    """Anything of cluster `name` still on the machine."""
    prefix = f"zm.{name}."
    found = [f"netns {n}" for n in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
        if n.startswith(prefix)]
    if Path("/etc/netns").exists():
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith(prefix)]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/mounts").read_text().splitlines()
              if prefix in line]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"--cluster {name} " in cmdline or f"/run/zeromesh/{name}/" in cmdline:
            found.append(f"process {pid}: {cmdline.strip()}")
    for d in (f"/run/zeromesh/{name}", f"/var/lib/zeromesh/{name}"):
        if Path(d).exists():
            found.append(d)
    return found
