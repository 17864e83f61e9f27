"""The label-quality, IDX and training modules import no Django (usable in any script)."""

from __future__ import annotations

import subprocess
import sys


def test_labeling_core_modules_import_no_django():
    code = (
        "import sys; import labeling.quality, labeling.idx, labeling.training; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
