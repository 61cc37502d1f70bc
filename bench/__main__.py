"""`python -m bench`: see bench.runner; `python -m bench memory`: see bench.memory;
`python -m bench slow`: see bench.slow."""

import sys

if sys.argv[1:] == ["memory"]:
    from .memory import main
elif sys.argv[1:] == ["slow"]:
    from .slow import main
else:
    from .runner import main

sys.exit(main())
