import sys

from datafuel.cli import main

sys.exit(main())
