"""What a command does, end to end: ``train`` (a new or resumed run), ``retrain`` (the best trial
of a search, evaluated and explained) and ``tune`` (a search, its results and summary).

The layer above training and tuning: each workflow checks its input, connects to Ray, runs
the library's parts in order and leaves a self-contained folder behind.
"""
