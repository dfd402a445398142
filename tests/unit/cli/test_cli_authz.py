"""`zeromesh x authz check` from files: decisions, reasons and exit codes (no cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeromesh.cli.main import main

DEMO = Path(__file__).resolve().parents[3] / "examples" / "istio-ambient-demo"
ECHO2 = ["--dest-namespace", "ns2", "--dest-labels", "app=echoserver-app-ns2", "--port", "80"]
GW = ["--dest-namespace", "ns2", "--dest-labels", "istio.io/gateway-name=echo-service-account-ns2-gw",
      "--port", "80"]
NS1_SLEEP = "cluster.local/ns/ns1/sa/sleep-service-account-ns1"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["x", "authz", "check", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("files,dest,who,extra,code,reason", [
    (["deny-all-l4.yaml"], ECHO2, ["--source-principal", NS1_SLEEP], [], 1,
     "denied: no ALLOW policy matched (checked ns2/deny-all)"),
    (["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO2, ["--source-principal", NS1_SLEEP], [], 0,
     "allowed by ALLOW policy ns2/allow-inbound-echo-ns2 rule 0"),
    (["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO2, ["--plaintext"], [], 1,
     "no ALLOW policy matched"),
    (["allow-comms-echo-ns2.yaml"], ["--dest-namespace", "ns1", "--port", "80"], ["--plaintext"], [], 0,
     "allowed: no ALLOW policy applies"),
    # Step 7 at the waypoint: GET allowed, POST denied; at the ztunnel the L7 rule is left out.
    (["deny-all-l4.yaml", "allow-get-to-echo-ns2.yaml"], GW, ["--source-principal", NS1_SLEEP],
     ["--enforcer", "waypoint", "--method", "GET"], 0, "allowed by ALLOW policy ns2/allow-get-to-echo-ns2"),
    (["deny-all-l4.yaml", "allow-get-to-echo-ns2.yaml"], GW, ["--source-principal", NS1_SLEEP],
     ["--enforcer", "waypoint", "--method", "POST"], 1, "no ALLOW policy matched"),
    (["deny-all-l4.yaml", "allow-get-to-echo-ns2.yaml"], GW, ["--source-principal", NS1_SLEEP],
     [], 1, "no ALLOW policy matched"),
])
def test_decisions(capsys: pytest.CaptureFixture[str], files: list[str], dest: list[str], who: list[str],
                   extra: list[str], code: int, reason: str) -> None:
    args = [a for f in files for a in ("-f", str(DEMO / f))] + dest + who + extra
    got, out, _ = run(capsys, *args)
    assert got == code and reason in out
    got, out, _ = run(capsys, *args, "-o", "json")
    data = json.loads(out)
    assert got == code and data["allowed"] == (code == 0) and reason in data["reason"]


def test_l7_rules_at_the_ztunnel_are_explained(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "-f", str(DEMO / "allow-get-to-echo-ns2.yaml"), *GW, "--plaintext")
    assert "note: ns2/allow-get-to-echo-ns2: ztunnel does not support HTTP attributes" in out


@pytest.mark.parametrize("args,message", [
    (["--port", "99999", "--plaintext"], "--port: 99999 is out of range"),
    (["--port", "80"], "give the source"),
    (["--port", "80", "--plaintext", "--dest-labels", "novalue"], "is not key=value"),
    (["--port", "80", "--plaintext", "--source-ip", "nope"], "--source-ip: 'nope' is not an IP"),
])
def test_bad_requests_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, _, err = run(capsys, "-f", str(DEMO / "deny-all-l4.yaml"), *args)
    assert code == 2 and message in err


def test_invalid_policy_exits_2_naming_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                   "metadata: {name: x, namespace: ns}\nspec: {action: MAYBE}\n")
    code, _, err = run(capsys, "-f", str(bad), "--port", "80", "--plaintext")
    assert code == 2 and "bad.yaml: document 1 (AuthorizationPolicy ns/x): spec.action" in err
