"""What a fresh interpreter loads: the one helper behind the import-isolation tests."""

import subprocess
import sys


def modules_after_import(*modules: str) -> set[str]:
    "The image_poser modules loaded in a fresh interpreter after importing `modules` (each must import)."
    code = (
        "import importlib, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('image_poser')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())
