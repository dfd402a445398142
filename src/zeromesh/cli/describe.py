"""`zeromesh proxy-config|pc` and `zeromesh x describe pod|service`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, xsub: Any, common: argparse.ArgumentParser, nsopt: argparse.ArgumentParser) -> None:
    """Register this module's commands (filled in as the module is written)."""
