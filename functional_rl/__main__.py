import sys

from functional_rl.shell.cli import main

sys.exit(main())
