"""A model artifact's metrics.json: one typed reader and writer; a broken file is a clear error."""

from __future__ import annotations

import pytest

from fusionrec import metrics as metrics_file
from fusionrec.errors import DatasetError

pytestmark = pytest.mark.unit


def test_metrics_round_trip_keep_what_the_trainer_added(tmp_path):
    metrics_file.write(
        tmp_path,
        {
            "test": {"ndcg@20": 0.25, "recall@20": 0.5},
            "split": {"protocol": "temporal", "seed": 3, "users": 10},
            "run": "r-1",
            "best_epoch": 7,
        },
    )
    back = metrics_file.read(tmp_path)
    assert back.figure("ndcg@20") == 0.25 and back.split.protocol == "temporal" and back.split.seed == 3
    assert back.model_extra == {"run": "r-1", "best_epoch": 7} and back.split.model_extra == {"users": 10}
    with pytest.raises(DatasetError, match="no test figure 'auc'"):
        back.figure("auc")


@pytest.mark.parametrize("content", ["", "{not json", '["a list"]', '{"test": {"ndcg@20": "high"}}'])
def test_a_broken_metrics_file_is_a_dataset_error_with_a_fixed_message(tmp_path, content):
    (tmp_path / "metrics.json").write_text(content)
    with pytest.raises(DatasetError, match="not a readable metrics.json"):
        metrics_file.read(tmp_path)
    with pytest.raises(DatasetError, match="not a model artifact"):
        metrics_file.read(tmp_path / "absent")
