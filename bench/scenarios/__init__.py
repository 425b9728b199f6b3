"""The scenarios of bench/run.py, each a frozen, typed result that writes its own
report and its own section of the results file (`Result` in result.py).

storm.py holds the measurement most of them share: a storm of pulls, and what
S3 sent for it.
"""
