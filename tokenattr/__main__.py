"""``python -m tokenattr``: the ``tokenattr`` command (see :mod:`tokenattr.app`)."""

from tokenattr.app import main

raise SystemExit(main())
