import sys

from mediagate.cli import main

sys.exit(main())
