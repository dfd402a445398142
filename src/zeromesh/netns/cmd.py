"""Run `ip` and `nft` inside a named namespace, turning failures into NetnsError."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from zeromesh.errors import NetnsError


def run(args: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a command; a failure carries the command line and its stderr."""
    proc = subprocess.run(
        list(args), input=input, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def ip_batch(netns: str, lines: Sequence[str]) -> None:
    """Many `ip` commands in one process: pod setup stays a few milliseconds."""
    run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n")


def sysctl(netns: str, settings: dict[str, str]) -> None:
    """Per-namespace sysctls (forwarding, redirects, unprivileged ports)."""
    run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w",
         *(f"{k}={v}" for k, v in settings.items())])


def nft(netns: str, ruleset: str) -> None:
    """Load an nftables script atomically inside the namespace."""
    run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset)


def list_netns() -> list[str]:
    """Names of every `ip netns` namespace on the machine."""
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(netns: str) -> list[int]:
    """Processes living in a namespace (to stop what we started there)."""
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]
