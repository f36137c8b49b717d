import sys

from flopwatch.cli.main import main

sys.exit(main())
