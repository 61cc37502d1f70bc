"""`python -m bench`: see bench.runner; `python -m bench memory`: see bench.memory;
`python -m bench polls`: bench.polls; `python -m bench startup`: bench.startup."""

import sys

if sys.argv[1:] == ["memory"]:
    from .memory import main
elif sys.argv[1:] == ["polls"]:
    from .polls import main
elif sys.argv[1:] == ["startup"]:
    from .startup import main
else:
    from .runner import main

sys.exit(main())
