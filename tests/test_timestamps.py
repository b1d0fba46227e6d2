"""One reading of a timestamp everywhere: the service, `flex-ml validate`/`score` and the model's
features accept the same values and give them the same day, in the contract's format, with offsets
converted to UTC (a mix of naive and offset values once crashed validation)."""
import numpy as np
import pandas as pd
import pytest

from flex_ml.features import to_model_inputs
from flex_ml.schema import Column, Schema
from flex_ml.request import timestamp_problems
from flex_ml.validate import check_column

VALUES = ["2024-03-07", " 2024-03-07", "2024-3-7", "2024-03-07T00:00:00Z", "2024-03-07T02:00:00+02:00",
          "2024-03-07 10:30:00", "2024-W10-4", "07/03/2024", "not a date", ""]


def schema(fmt=None):
    return Schema(name="t", columns=[Column(name="when", type="timestamp", format=fmt, nullable=True),
                                     Column(name="y", type="category", role="target", categories=[0, 1])],
                  missing_values=[""])


@pytest.mark.parametrize("fmt,values", [(None, VALUES), ("%d/%m/%Y", ["07/03/2024", "7/3/2024", "2024-03-07", "31/02/2024", ""])])
def test_service_validation_and_features_agree(fmt, values):
    s = schema(fmt)
    refused_by_service = {p["record"] for p in timestamp_problems([{"when": v} for v in values], s)}
    typed, problems = check_column(pd.Series(values), s["when"], s.missing_values)
    refused_by_validate = {i for i, _, _ in problems}
    assert refused_by_service == refused_by_validate
    days = to_model_inputs([{"when": v} for v in values], s)["when"]
    ok = [i for i in range(len(values)) if i not in refused_by_service and values[i] != ""]
    assert ok and np.isfinite(days[ok]).all()
    # the typed column (what training sees) and a raw record (what the service sees) give the same day
    from_typed = to_model_inputs(pd.DataFrame({"when": typed}), s)["when"]
    assert np.array_equal(from_typed[ok], days[ok])


def test_offsets_are_converted_to_utc_and_a_mix_does_not_crash():
    s = schema()
    typed, problems = check_column(pd.Series(["2024-03-07T23:00:00-02:00", "2024-03-07", "2024-03-08T01:00:00Z"]),
                                   s["when"], s.missing_values)
    assert problems == []
    assert [str(t) for t in typed] == ["2024-03-08 01:00:00", "2024-03-07 00:00:00", "2024-03-08 01:00:00"]
    days = to_model_inputs([{"when": "2024-03-07T23:00:00-02:00"}, {"when": "2024-03-08T01:00:00Z"}], s)["when"]
    assert days[0] == days[1]


def test_the_message_names_the_value_and_format():
    p = timestamp_problems([{"when": "31/02/2024"}], schema("%d/%m/%Y"))
    assert p == [{"record": 0, "field": "when", "rule": "timestamp", "value": "31/02/2024",
                  "message": "'31/02/2024' is not a timestamp in the format %d/%m/%Y"}]
