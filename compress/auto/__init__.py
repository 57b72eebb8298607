"""`compress auto`: the accuracy-budgeted search over every technique, export and runtime (candidates, evaluator, choice, log, report, the loop)."""
