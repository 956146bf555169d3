"""Writes the drift benchmark's tables: a reference and a current table of ROWS rows and
COLUMNS standard-normal float64 columns (c00, c01, ...), the first SHIFTED of them shifted by
SHIFT standard deviations in the current table. NumPy's PCG64 generator seeded with SEED makes
the values bit-reproducible; they are written to Parquet (pyarrow, Snappy) and the SHA-256 of
the raw values is printed, so two runs can be checked to have compared the same data.

    python bench/drift/gen.py --rows 1000000 --out build/bench/drift/1m
"""

import argparse
import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def table(rng, rows, columns, shifted, shift, digest):
    arrays = {}
    for i in range(columns):
        values = rng.standard_normal(rows)
        if i < shifted:
            values += shift
        digest.update(values.tobytes())
        arrays[f"c{i:02d}"] = values
    return pa.table(arrays)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--shifted", type=int, default=10)
    parser.add_argument("--shift", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(args.seed))
    digest = hashlib.sha256()
    reference = table(rng, args.rows, args.columns, 0, 0.0, digest)
    current = table(rng, args.rows, args.columns, args.shifted, args.shift, digest)
    pq.write_table(reference, os.path.join(args.out, "reference.parquet"))
    pq.write_table(current, os.path.join(args.out, "current.parquet"))
    print(digest.hexdigest())


if __name__ == "__main__":
    main()
