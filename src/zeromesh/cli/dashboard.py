"""`zeromesh dashboard`: the web UI on loopback."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, xsub: Any, common: argparse.ArgumentParser, nsopt: argparse.ArgumentParser) -> None:
    """Register this module's commands (filled in as the module is written)."""
