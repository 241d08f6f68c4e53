import sys

from dpc.cli import main

sys.exit(main())
