"""`python -m bench`: see bench.runner; `python -m bench memory`: see bench.memory;
`python -m bench b64`: see bench.b64."""

import sys

if sys.argv[1:] == ["memory"]:
    from .memory import main
elif sys.argv[1:] == ["b64"]:
    from .b64 import main
else:
    from .runner import main

sys.exit(main())
