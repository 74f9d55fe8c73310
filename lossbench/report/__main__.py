import sys

from lossbench.report.cli import main

sys.exit(main())
