"""The simulator's validation table: fit on some of the seed's rows, predict all 117.

    python benchmarks/sim_validation.py                                   # the shipped split
    python benchmarks/sim_validation.py "output_len=800,prefix_len=0,concurrency=4|16|64|none,batch_size=32|128|512|none"

Prints the absolute % error (median / max) per engine x GPU and metric, in-sample and held-out
(longer outputs and the prefix rows apart), then the worst held-out rows, each marked with the
regimes of the model it needed that the fit never saw. About 12 CPU-seconds.
"""

from __future__ import annotations

import argparse

from raybench.calibration import (calibrate, error_table, load_reference, observations, predicted_row_error, row_label,
                                  seed_launches, select_rows)
from raybench.errors import ConfigError


def main(only: str) -> None:
    published = load_reference(["published"])
    train = select_rows(published, only)
    profiles = {f.profile.key: f.profile for f in calibrate(train, seed_launches(), fitted_on=only)}
    trained = {row_label(r) for r in train.iter_rows(named=True)}
    groups: dict[str, list] = {}
    for obs in observations(published, seed_launches()):
        error = predicted_row_error(obs, profiles[obs.key])
        kind = "in-sample" if obs.label in trained else "held-out"
        groups.setdefault(f"{obs.key} {kind}", []).append(error)
        groups.setdefault(f"ALL {kind}", []).append(error)
        if kind == "held-out":
            groups.setdefault("ALL held-out: " + ("prefix" if "prefix" in obs.label else "longer outputs"),
                              []).append(error)
    order = sorted(k for k in groups if not k.startswith("ALL")) + sorted(k for k in groups if k.startswith("ALL"))
    print(f"fitted on: {only} ({train.height} rows)")
    print(error_table({k: groups[k] for k in order}, worst=10))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="?", default="output_len=800,prefix_len=0",
                        help="the rows to fit on, as calibrate --only takes them (default: the shipped split)")
    args = parser.parse_args()
    try:
        main(args.only)
    except ConfigError as err:
        parser.error(str(err))
