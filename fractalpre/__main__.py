import sys

from fractalpre.cli import main

sys.exit(main())
