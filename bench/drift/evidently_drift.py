"""Evidently's side of the drift benchmark: reads both Parquet tables with pandas and runs a
Report with DataDriftPreset, then writes each column's drift score and method as JSON.

    python bench/drift/evidently_drift.py REFERENCE.parquet CURRENT.parquet OUT.json
"""

import json
import sys

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def main():
    reference = pd.read_parquet(sys.argv[1])
    current = pd.read_parquet(sys.argv[2])
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    scores = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            scores[config["column"]] = {"method": config["method"], "score": float(metric["value"])}
    with open(sys.argv[3], "w") as f:
        json.dump(scores, f)


if __name__ == "__main__":
    main()
