#!/usr/bin/env bash
# Install everything, then run lint, the unit tests and the end-to-end tests (as root).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1

echo "== ruff"
.venv/bin/ruff check src tests bench || exit 1

echo "== tests"
.venv/bin/pytest -p no:cacheprovider -q -rfEs tests "$@"
rc=$?
# pytest exits 5 when it collected nothing: that is a broken suite, never a pass.
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit $rc
