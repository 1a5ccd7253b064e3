import sys

from functional_rl.cli import main

sys.exit(main())
