"""``python -m raftkv.cli``: the ``raftkv`` command (how tests and local clusters start nodes)."""

import contextlib

from raftkv.cli import main

with contextlib.suppress(KeyboardInterrupt):
    main()
