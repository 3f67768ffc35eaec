"""Evaluate offline from a checkout (installed: `streamrec-evaluate`, the same flags).

    python als_fit.py --evaluate                 # report, then train the model as usual
    python evaluation.py --data sessions.csv     # report only
    python evaluation.py --protocol live         # the RecSys 2021 live protocol

The command is `streamrec.cli.evaluate`; the protocols `streamrec.evaluate.offline`.
"""

import sys

from streamrec.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
