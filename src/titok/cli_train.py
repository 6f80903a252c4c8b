"""``python -m titok.cli_train``: the ``titok train`` commands under their documented module name.

Multi-process launchers run a module, e.g. ``accelerate launch -m titok.cli_train stage1 ...`` or
``torchrun --nproc_per_node N -m titok.cli_train stage1 ...``; the commands live in
:mod:`titok.cli.train`.
"""

from __future__ import annotations

import sys

from titok.cli.train import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    sys.exit(main())
