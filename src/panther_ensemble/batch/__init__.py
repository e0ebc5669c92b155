"""Many cases with one loaded ensemble (`panther-ensemble predict` over files, folders, globs or a list file).

    run.py       discovery, shards (--shard I/N, job-array indices), resume, the batch loop's outcome
    pipeline.py  reader, predictor and writer threads: the next case read and the last one written while
                 the current one is predicted
    summary.py   per-shard append-only logs merged into OUT/summary.csv
"""
