"""The built wheel installs under one namespace, `nvmstream`, and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from onnx_util import FIXTURES, REPO


def run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_layout_and_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO])
    wheel, = dist.glob("nvmstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert all(t == "nvmstream" or t.endswith(".dist-info") for t in tops), tops
    assert "nvmstream/__init__.py" in names
    for sub in ("converters", "devices", "runtime"):
        assert f"nvmstream/{sub}/__init__.py" in names
    assert not any(n.startswith(("tests/", "demos/", "runtime/", "converters/")) for n in names)
    assert any(n.startswith("nvmstream/devices/profiles/") and n.endswith(".toml") for n in names)

    # A fresh venv with only the wheel installed; dependencies come from this environment's
    # site-packages through a path entry (its .pth files -- e.g. our editable finder -- are not
    # processed, so the checkout cannot leak in).
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel])
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                    ).stdout.strip())
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = run([py, "-c", "import nvmstream, nvmstream.runtime.cli, nvmstream.devices; "
             "print(nvmstream.__file__)"], cwd=work, env=env)
    assert str(site) in r.stdout, r.stdout
    r = subprocess.run([py, "-c", "import runtime"], cwd=work, env=env, capture_output=True)
    assert r.returncode != 0  # nothing generic landed in site-packages
    r = run([venv / "bin" / "nvmstream", "inspect", FIXTURES / "gru_bf.ts.onnx"], cwd=work,
            env=env)
    assert "GRU" in r.stdout and "streamable: yes" in r.stdout
