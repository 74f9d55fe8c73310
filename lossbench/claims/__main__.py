import sys

from lossbench.claims.cli import main

sys.exit(main())
