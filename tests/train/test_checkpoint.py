"""A damaged checkpoint fails to load as one line naming its file."""

import pytest
import torch

from genforge.errors import ArtifactError
from genforge.train.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint


def test_truncated_checkpoint_weights_name_the_file(tmp_path):
    model = torch.nn.Linear(64, 64)
    folder = tmp_path / "latest"
    save_checkpoint(folder, model, {"step": 3})
    assert load_checkpoint(folder, torch.nn.Linear(64, 64))["step"] == 3
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"latest/model.safetensors is corrupt \(.*\): re-copy it or retrain"):
        load_checkpoint(folder, torch.nn.Linear(64, 64))


def test_a_checkpoint_of_other_sizes_is_one_line(tmp_path):
    folder = tmp_path / "latest"
    save_checkpoint(folder, torch.nn.Linear(64, 64), {"step": 3})
    with pytest.raises(ArtifactError, match=r"does not fit the model: bias is \(64,\) there, \(32,\) here \(2 tensors "
                                            r"differ\); resume with the run's own sizes"):
        load_checkpoint(folder, torch.nn.Linear(64, 32))
