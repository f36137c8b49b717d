import sys

from flopwatch.cli import main

sys.exit(main())
