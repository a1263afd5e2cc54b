import sys

from bench.nodescale.cli import main

sys.exit(main())
