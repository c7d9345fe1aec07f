"""``python -m mithril ARGS`` runs the ``mithril`` command installed beside
this interpreter (pip installs it into the environment's scripts directory)."""
from __future__ import annotations

import os
import shutil
import sys
import sysconfig


def main() -> None:
    exe = os.path.join(sysconfig.get_path("scripts"), "mithril")
    if not os.access(exe, os.X_OK):
        found = shutil.which("mithril")
        if found is None:
            sys.exit("mithril: the mithril command is not installed (pip install the package)")
        exe = found
    os.execv(exe, [exe, *sys.argv[1:]])


if __name__ == "__main__":
    main()
