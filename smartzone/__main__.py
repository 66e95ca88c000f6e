import sys

from smartzone.cli import main

sys.exit(main())
