"""The commands: `streamrec-train`, `streamrec-serve`, `streamrec-evaluate` (arguments and calls)."""
