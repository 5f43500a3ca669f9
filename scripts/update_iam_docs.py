"""Regenerate the IAM policies the docs and the golden test show, after changing worker/ops/iam.py.

.venv/bin/python scripts/update_iam_docs.py
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from worker.ops.iam import build_policy
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _policy(config: Path, account: str) -> dict:
    return build_policy(Settings(**yaml.safe_load(config.read_text())), account)


def _write(path: Path, policy: dict) -> str:
    text = json.dumps(policy, indent=2)
    path.write_text(text + "\n")
    return text


def main() -> None:
    golden = ROOT / "tests" / "golden"
    _write(golden / "iam-policy.json", _policy(golden / "iam-config.yaml", "210987654321"))
    page = ROOT / "docs" / "modes.md"
    text = page.read_text()
    for mode in ("explicit", "auto", "discovery"):
        target = ROOT / "docs" / "modes" / f"{mode}.policy.json"
        old = json.dumps(json.loads(target.read_text()), indent=2)
        new = _write(target, _policy(ROOT / "docs" / "modes" / f"{mode}.yaml", "123456789012"))
        text = text.replace(old, new)
    page.write_text(text)


if __name__ == "__main__":
    main()
