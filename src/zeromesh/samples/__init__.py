"""Sample applications shipped with the local cluster.

The local cluster runs Kubernetes Deployments as plain host processes inside
network namespaces. A container whose image has no ``command`` is mapped to one
of these samples, so the well-known demo images (http-echo, tcp-echo, httpbin)
work without a container runtime.

Each sample is started as ``/usr/bin/python3 <file>`` by user ``nobody``, which
may not be able to read the project's virtualenv. Therefore every sample is a
single self-contained file that imports ONLY the Python standard library (never
``zeromesh`` or a third-party package). Do not name a sample after a stdlib
module (e.g. ``http.py``): the script's own directory is first on ``sys.path``
and would shadow it.

Environment contract shared by all samples:

* ``PORTS`` -- comma-separated listen ports (e.g. ``"80,8080"``); when unset or
  empty, ``PORT``; when that is unset too, the sample's default port.
* ``BIND`` -- listen address, default ``0.0.0.0`` (an address containing ``:``
  is treated as IPv6).
* ``POD_NAME``, ``POD_NAMESPACE``, ``NODE_NAME``, ``POD_IP``,
  ``SERVICE_ACCOUNT``, ``ZEROMESH_SERVICES`` -- pod identity, reported back in
  responses so callers can see which pod answered.

All samples print one "<name> listening on <bind>:<ports>" line at startup and
exit with status 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import pathlib

SAMPLES: dict[str, str] = {
    "http-echo": "http_echo.py",
    "tcp-echo": "tcp_echo.py",
    "httpbin": "httpbin.py",
}

_SAMPLES_DIR = pathlib.Path(__file__).resolve().parent


def sample_path(name: str) -> pathlib.Path:
    """Return the absolute path of the script implementing sample ``name``.

    Raises KeyError naming the known samples, so a typo in an image mapping is
    reported clearly instead of as a bare missing key.
    """
    try:
        file_name = SAMPLES[name]
    except KeyError:
        known = ", ".join(sorted(SAMPLES))
        raise KeyError(f"unknown sample {name!r}; known samples: {known}") from None
    return _SAMPLES_DIR / file_name


__all__ = ["SAMPLES", "sample_path"]
