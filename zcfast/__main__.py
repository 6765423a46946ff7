import sys

from zcfast.cli import main

sys.exit(main())
