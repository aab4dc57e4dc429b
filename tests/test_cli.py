"""The console script end to end, as a user runs it (a subprocess, not an import)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import image_poser

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("image-poser")


def cli(*args, check=True, timeout=300):
    r = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=os.environ.copy())
    if check and r.returncode != 0:
        raise AssertionError(f"image-poser {' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def test_help_lists_subcommands():
    out = cli("--help").stdout
    assert "version" in out


def test_version():
    assert cli("version").stdout.strip() == image_poser.__version__
    assert json.loads(cli("version", "--json").stdout) == {"version": image_poser.__version__}


def test_unknown_subcommand_fails_cleanly():
    r = cli("frobnicate", check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
