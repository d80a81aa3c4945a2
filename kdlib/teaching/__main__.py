"""``python -m kdlib.teaching report FOLDER``: print the grade report of executed exercise notebooks."""

import sys

from kdlib.teaching.grading import main

sys.exit(main())
