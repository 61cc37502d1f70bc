"""`python -m bench`: see bench.runner; `python -m bench memory`: see bench.memory."""

import sys

if sys.argv[1:] == ["memory"]:
    from .memory import main
else:
    from .runner import main

sys.exit(main())
