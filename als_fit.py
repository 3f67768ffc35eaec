"""Train the recommender from a viewing-sessions CSV and save it to one model file (installed:
`streamrec-train`, the same flags).

    python als_fit.py                                  # demo sessions -> models/model.pkl
    python als_fit.py --data sessions.csv --model models/model.pkl
    python als_fit.py --data 100k_a.csv --factors 64 --iterations 15
    python als_fit.py --engine spark --data sessions/ --spark-master 'local[*]'   # SCALE.md
    python als_fit.py --update --data sessions_today.csv   # fold new sessions into the model

The command is `streamrec.cli.train`; `--help` shows every flag with its default.
"""

import sys

from streamrec.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
