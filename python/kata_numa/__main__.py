import sys

from kata_numa.cli import main

sys.exit(main())
